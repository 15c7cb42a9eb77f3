# TD307 fixtures: a tensor autograd tracks, sliced at the loop variable in every iteration.
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SequentialScan(nn.Module):  # mamba.py's selective_scan_seq
    def selective_scan_seq(self, x, delta, A, B):
        deltaA = torch.exp(delta.unsqueeze(-1) * A)
        BX = delta.unsqueeze(-1) * B.unsqueeze(2) * x.unsqueeze(-1)
        h = torch.zeros(x.size(0), A.size(0), A.size(1))
        hs = []
        for t in range(0, x.shape[1]):
            h = deltaA[:, t] * h + BX[:, t]  # expect: TD307, TD307
            hs.append(h)
        return torch.stack(hs, dim=1)


class CharRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        self.cell = nn.GRUCell(32, 64)

    def forward(self, tokens):
        emb = self.embed(tokens)
        h = torch.zeros(tokens.size(0), 64)
        for t in range(tokens.size(1)):
            h = self.cell(emb[:, t, :], h)  # expect: TD307
        return h


class Seq2Seq(nn.Module):
    def forward(self, x, steps):
        out = []
        for t in reversed(range(steps)):
            out.append(x.select(1, t) * 2)  # expect: TD307
        return out


class PerImageMahalanobis(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(128, 32)

    def forward(self, feats):
        z = self.proj(feats)
        out = []
        for b in range(z.shape[0]):  # expect: TD304
            zb = z[b] - z[b].mean(0)  # expect: TD307 (once: the same slice twice, one message)
            out.append((zb * zb).sum())
        return torch.stack(out)


def per_step_loss(model, x, y, criterion):
    logits = model(x)
    loss = 0.0
    for t in range(y.size(1)):
        loss = loss + criterion(logits[:, t], y[:, t])  # expect: TD307
    return loss


def time_major(model, x):  # a model's output, time first
    states = model(x).transpose(0, 1)
    total = 0
    for t in range(1, states.size(0)):
        total = total + (states[t] - states[t - 1]).pow(2).sum()  # expect: TD307, TD307
    return total


# ---- near misses: these lines stay silent ----------------------------------------------------
class Unbound(nn.Module):
    def forward(self, a, b):
        h, hs = 0, []
        for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
            h = a_t * h + b_t
            hs.append(h)
        return torch.stack(hs, 1)


def data_slices(model, loader):
    for x, y in loader:
        x = x.to("cpu").float()
        for t in range(x.size(1)):
            model(x[:, t])  # data: nothing tracked


@torch.no_grad()
def sample(model, z, steps):
    out = model(z)
    for t in range(steps):
        z = out[:, t] + z  # no autograd
    return z


def fill(x, steps):
    out = torch.empty(x.size(0), steps)
    for t in range(steps):
        out[:, t] = x.sum(1) * t
        x = out[:, t].unsqueeze(1) + x  # a buffer the loop writes
    return out


def levels(backbone, convs, image):
    feats = backbone(image)
    return [convs[i](feats[i]) for i in range(len(feats))]


def few(model, x):
    y = model(x)
    return [y[:, t] for t in range(3)]  # a literal handful


def numpy_table(values, n):
    table = np.cumsum(values, axis=0) * 2
    return [table[:, t] for t in range(n)]


class Heads(nn.Module):
    def forward(self, q, k, heads):
        for i in range(heads):
            k[:, i] = q[:, i] * 2  # a handful of heads, not time steps
        return k


def from_arguments(x, w, n):
    states = torch.tanh(x @ w)  # a function's arguments: data or not, unknown
    total = 0
    for t in range(1, n):
        total = total + (states[t] - states[t - 1]).pow(2).sum()
    return total


class Rope(nn.Module):  # diffusers' FluxPosEmbed: position ids, one slice per axis
    def forward(self, ids):
        n_axes = ids.shape[-1]
        pos = ids.float()
        return [self.embed(pos[:, i]) for i in range(n_axes)]


def ap_per_class(tp, conf, n_l, eps=1e-16):  # NumPy metrics
    tpc = tp.cumsum(0)
    recall = tpc / (n_l + eps)
    return [recall[:, j].mean() for j in range(tp.shape[1])]


class Masks:
    def boxes(self):
        x_any = torch.any(self.tensor, dim=1)
        for idx in range(self.tensor.shape[0]):
            yield x_any[idx, :].float().mean()  # booleans: no gradient


class CrossMapLRN(torch.autograd.Function):  # autograd is off in a Function's forward
    @staticmethod
    def forward(ctx, x, size):
        square = x * x
        out = torch.empty_like(x)
        for c in range(1, x.size(1)):
            out.select(1, c).copy_(square.select(1, c - 1))
        return out


class XPathEmbeddings(nn.Module):  # markuplm: integer tags looked up per depth
    def forward(self, xpath_tags_seq):
        tags = xpath_tags_seq.long() + 1
        return [self.tag_embeddings[i](tags[:, :, i]) for i in range(self.max_depth)]


def decode_strings(decoder, pred_logits, batch_size, eos):
    preds_str = decoder(pred_logits.argmax(-1))
    return [preds_str[index].find(eos) for index in range(batch_size)]


class TimeMajorRNN(nn.Module):
    def forward(self, x):
        T, B, _ = x.shape
        h = x.new_zeros(B, 16)
        for t in range(T):
            h = self.cell(x[t], h)  # expect: TD307
        return h


class AttnDecoderRNN(nn.Module):  # the PyTorch seq2seq tutorial: teacher forcing slices targets
    def forward(self, encoder_outputs, encoder_hidden, target_tensor=None):
        decoder_input, decoder_hidden, outputs = self.start, encoder_hidden, []
        for i in range(self.max_length):
            out, decoder_hidden = self.forward_step(decoder_input, decoder_hidden)
            outputs.append(out)
            if target_tensor is not None:
                decoder_input = target_tensor[:, i].unsqueeze(1)  # token ids: no gradient
        return outputs


class PartMatcher(nn.Module):  # seed 000: each image's matching cost goes to scipy, detached
    def forward(self, fa, fb):
        perms = []
        for b in range(fa.size(0)):
            sim = fa[b] @ fb[b].t()  # no backward through the slices: only sim.detach() is read
            perms.append(torch.as_tensor(solve(-sim.detach().cpu().numpy())))
            cost = (fa[:, b] - fb[:, b]).detach()  # detached where it is made
            perms.append(cost)
        return perms


class Seq2Seq(nn.Module):  # bentrevett/pytorch-seq2seq: teacher forcing over the target ids
    def forward(self, src, trg, teacher_forcing_ratio):
        outputs = torch.zeros(trg.shape[0], trg.shape[1], self.vocab)
        hidden, cell = self.encoder(src)
        inp = trg[0, :]
        for t in range(1, trg.shape[0]):
            output, hidden, cell = self.decoder(inp, hidden, cell)
            outputs[t] = output
            inp = trg[t] if teacher_forcing_ratio > 0.5 else output.argmax(1)  # token ids
        return outputs


class Forecaster(nn.Module):  # teacher forcing over real-valued targets, a trajectory's input
    def forward(self, obs, y=None):
        emb = self.embed(obs)
        h = obs.new_zeros(obs.shape[0], self.hidden)
        for t in range(obs.shape[1]):
            h = self.cell(emb[:, t], h)  # expect: TD307
            self.pool(h, obs[:, t])  # the observations: data, not activations
        inp, outs = obs[:, -1], []
        for t in range(self.horizon):
            h = self.dec(inp, h)
            outs.append(self.proj(h))
            inp = y[:, t] if y is not None else outs[-1]  # the target: data
        return torch.stack(outs, 1)


class SpikingConvNet(nn.Module):
    def forward(self, x_seq):
        T, B = x_seq.shape[:2]
        cur1 = self.pool(self.conv1(x_seq.flatten(0, 1))).view(T, B, 32, 16, 16)
        mem = torch.zeros(B, 32, 16, 16, device=x_seq.device)
        outs = []
        for t in range(T):
            spk, mem = self.lif(cur1[t], mem)  # expect: TD307
            outs.append(spk)
        return torch.stack(outs)


class CrossNetV2(nn.Module):
    """DCN-v2: every cross layer's weight stacked in one parameter, sliced per layer."""

    def __init__(self, dim, num_layers):
        super().__init__()
        self.num_layers = num_layers
        self.kernels = nn.Parameter(torch.empty(num_layers, dim, dim))
        self.scale = 2.0

    def forward(self, x0):
        x = x0
        for i in range(self.num_layers):
            x = x0 * (x @ self.kernels[i]) + x  # expect: TD307 (a parameter of all the layers)
        return x * self.scale


class SeqAutoencoder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dec = nn.LSTM(d, d, batch_first=True)
        self.head = nn.Linear(d, 1)

    def forward(self, dec_in):
        h, _ = self.dec(dec_in)  # (an RNN's output, unpacked with its state)
        out = []
        for t in range(h.shape[1]):
            out.append(self.head(h[:, t]))  # expect: TD307
        return torch.stack(out, 1)


class RSSM(nn.Module):
    def observe(self, embed, actions, is_first):
        state = self.initial(embed.shape[0])
        posts = []
        for t in range(embed.shape[1]):
            keep = (1.0 - is_first[:, t])[:, None]  # near-miss: episode-start flags, no graph
            state = self.step(state * keep, actions[:, t], embed[:, t])  # expect: TD307
            posts.append(state)
        return torch.stack(posts, 1)


class CaptionDecoder(nn.Module):
    def forward(self, encoder_out, captions, decode_lengths):
        embeddings = self.embedding(captions)
        h, c = self.init_hidden_state(encoder_out)
        predictions = []
        for t in range(max(decode_lengths)):
            batch_size_t = sum([length > t for length in decode_lengths])
            awe = self.attention(encoder_out[:batch_size_t], h[:batch_size_t])
            step_in = torch.cat([embeddings[:batch_size_t, t, :], awe], dim=1)  # expect: TD307
            h, c = self.decode_step(step_in, (h[:batch_size_t], c[:batch_size_t]))
            predictions.append(self.fc(h))
        return predictions


class Res2Block(nn.Module):
    def forward(self, x):
        out = self.conv1(x)
        spx = torch.split(out, self.width, 1)
        outs = []
        for i in range(self.nums):
            sp = spx[i] if i == 0 else sp + spx[i]  # near-miss: an item of a tuple, no slice op
            outs.append(self.convs[i](sp))
        return torch.cat(outs, dim=1)


class VideoClassifier(nn.Module):
    def forward(self, clips):
        feats = torch.stack([self.encoder(clips[i]) for i in range(clips.shape[0])])  # expect: TD304
        return self.head(feats.mean(1))


def token_loss(logits, labels):
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    total = logits.new_zeros(())
    for t in range(shift_logits.size(1)):
        total = total + F.cross_entropy(shift_logits[:, t].float(), shift_labels[:, t])  # expect: TD307
    return total


def decode_scores(scores, steps):
    best = []
    for t in range(steps):
        best.append(scores[:, t].argmax(-1))  # near-miss: no training loop calls it
    return best


def temporal_consistency(feats, steps):  # ST-GCN's loss on a model's per-frame features
    loss = 0.0
    for t in range(steps - 1):
        loss = loss + (feats[:, t] - feats[:, t + 1]).pow(2).mean()  # expect: TD307
    return loss


def frame_smoothness(feats, steps):
    loss = 0.0
    for t in range(steps - 1):
        loss = loss + (feats[:, t] - feats[:, t + 1]).pow(2).mean()  # near-miss: no loop trains
    return loss


def finetune(model, loader, opt):
    for batch in loader:
        loss = token_loss(model(batch["input_ids"]), batch["labels"])
        feats = model.features(batch["input_ids"])
        loss = loss + temporal_consistency(feats, feats.shape[1])
        loss.backward()
        opt.step()


class MLPBuilder(nn.Module):
    def create_mlp(self, ln):
        layers = nn.ModuleList()
        for i in range(0, ln.size - 1):
            n, m = int(ln[i]), int(ln[i + 1])  # near-miss: layer sizes read as numbers
            layers.append(nn.Linear(n, m))
        return layers


class LayerSizes(nn.Module):  # dlrm's create_mlp: layer sizes read once, in the constructor
    def __init__(self, ln):
        super().__init__()
        layers = []
        for i in range(0, ln.size - 1):
            n = ln[i]
            m = ln[i + 1]
            layers += [nn.Linear(int(n), int(m)), nn.ReLU()]
        self.net = nn.Sequential(*layers)


def rollout_loss(model, g, future, steps, gamma=0.9):  # the pushforward rollout of a simulator
    vel, vels = g["vel"], []
    for _ in range(steps):
        vel = vel + model(g, vel)
        vels.append(vel)
    traj = torch.stack(vels, 1)
    total = 0.0
    for t in range(steps):
        total = total + gamma**t * ((traj[:, t] - future[:, t]) ** 2).mean()  # expect: TD307
    return total / steps


def teacher_forced_loss(g, future, steps, dt=0.01):
    vel, vels = g["vel"], []
    for _ in range(steps):
        vel = vel + dt * g["acc"]
        vels.append(vel)
    traj = torch.stack(vels, 1)
    total = 0.0
    for t in range(steps):
        total = total + ((traj[:, t] - future[:, t]) ** 2).mean()  # near-miss: data integrated, no model
    return total / steps


class DetectionLoss(nn.Module):  # yhenon's RetinaNet FocalLoss: a loop over the batch's images
    def forward(self, classifications, annotations):
        losses = []
        for j in range(classifications.shape[0]):  # expect: TD304
            classification = classifications[j, :, :]  # expect: TD307
            bbox_annotation = annotations[j, :, :]  # near-miss: padded ground-truth boxes, data
            losses.append((classification.sigmoid() - bbox_annotation[:, :1]).abs().mean())
        return torch.stack(losses).mean()

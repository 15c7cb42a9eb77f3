# A host read in the body of an `if` whose test is a tensor's truth value runs only when the data
# says so (HiFi-GAN's mel_spectrogram prints the minimum only when it is out of range): the read
# every step is the test, told on its own line. A read after the `if` runs every step.
import torch


def mel_spectrogram(y, n_fft):
    if torch.min(y) < -1.0:  # expect: TD201
        print("min value is ", torch.min(y))  # near-miss: runs only when the test fires
    if torch.max(y) > 1.0:  # expect: TD201
        print("max value is ", torch.max(y))  # near-miss: runs only when the test fires
    return torch.stft(y, n_fft, return_complex=True).abs()


def train(gen, loader, opt):
    total = 0.0
    for x, y in loader:
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        loss = (mel_spectrogram(gen(x), 1024) - mel_spectrogram(y, 1024)).abs().mean()
        if torch.isnan(loss):  # expect: TD201
            print(f"non-finite loss {loss.item()}")  # near-miss: runs only on a NaN
            continue
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()  # expect: TD201
    return total


def train_with_queue(model, loader, opt, queue):
    use_the_queue = False
    for x in loader:
        out = model(x.cuda(non_blocking=True))
        if use_the_queue or not torch.all(queue[-1] == 0):  # near-miss: a latch (SwAV's queue)
            use_the_queue = True
            out = torch.cat((queue, out))
        if use_the_queue and torch.all(queue[-1] == 0):  # expect: TD201
            print("queue emptied")
        loss = out.logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

# The truth value of a comparison with a torch function's result (if torch.min(y) < -1.:) is a
# host read: in a helper every training step calls (HiFi-GAN's mel_spectrogram, run on the
# generator's output) or in the loop itself. torch.numel and torch.cuda.device_count give
# Python numbers.
import torch


def mel_spectrogram(y, n_fft):
    if torch.min(y) < -1.0:  # expect: TD201
        y = y.clamp(-1.0, 1.0)
    if torch.numel(y) > n_fft * 64:  # near-miss: torch.numel is a Python int
        y = y[..., : n_fft * 64]
    return torch.stft(y, n_fft, return_complex=True).abs()


def train(gen, loader, opt):
    for x, y in loader:
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        fake = gen(x)
        loss = (mel_spectrogram(fake, 1024) - mel_spectrogram(y, 1024)).abs().mean()
        opt.zero_grad()
        loss.backward()
        if torch.cuda.device_count() > 1:  # near-miss: a Python int
            torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        if torch.max(x) > 10:  # expect: TD201
            x = x / 10
        opt.step()

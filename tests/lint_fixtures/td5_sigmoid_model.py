"""TD510 a model ending in a sigmoid and an nn.BCELoss built for it (PyTorch-GAN's gan.py,
pytorch/examples dcgan): the loss is reported where it is built."""

import torch
import torch.nn as nn


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(100, 784), nn.Tanh())  # images in [-1, 1]

    def forward(self, z):
        return self.model(z)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(784, 256),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(256, 1),
            nn.Sigmoid(),
        )

    def forward(self, img):
        validity = self.model(img.view(img.size(0), -1))
        return validity


adversarial_loss = torch.nn.BCELoss()  # expect: TD510
pixel_loss = torch.nn.L1Loss()  # near-miss: another loss
generator, discriminator = Generator(), Discriminator()


def train_step(real, z, valid, fake):
    g_loss = adversarial_loss(discriminator(generator(z)), valid)  # near-miss: reported where built
    d_loss = adversarial_loss(discriminator(real), valid) + adversarial_loss(
        discriminator(generator(z).detach()), fake
    )  # near-miss: the same loss
    return g_loss, d_loss

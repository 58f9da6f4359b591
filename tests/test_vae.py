import pytest
import torch

from tavaal_seg.core.vae import RANK_TRANSFORMS, ConditionalVAE, Discriminator, vae_loss, vae_stage_count


@pytest.mark.parametrize("size,stages,latent_hw", [((32, 32), 4, (2, 2)), ((64, 64), 5, (2, 2)), ((64, 128), 5, (2, 4)),
                                                    ((48, 96), 4, (3, 6))])
def test_vae_shapes_for_square_and_non_square_inputs(size, stages, latent_hw):
    torch.manual_seed(0)
    assert vae_stage_count(size) == stages
    vae = ConditionalVAE(size, z_dim=8, cond_dim=1, width=0.0625)
    x = torch.randn(3, 3, *size)
    r = torch.randn(3)
    recon, mu, logvar = vae(x, r)
    assert recon.shape == x.shape and mu.shape == (3, 8) and logvar.shape == (3, 8)
    assert vae.dec_shape[1:] == (latent_hw[0] * 2, latent_hw[1] * 2)
    loss = vae_loss(x, recon, mu, logvar, beta=1.0)
    loss.backward()
    d = Discriminator(z_dim=8, cond_dim=1)
    assert d(mu.detach(), r).shape == (3,)


def test_reference_architecture_at_32x32():
    vae = ConditionalVAE((32, 32), z_dim=32, cond_dim=1, width=1.0)
    convs = [m.out_channels for m in vae.encoder if isinstance(m, torch.nn.Conv2d)]
    assert convs == [128, 256, 512, 1024]
    assert vae.fc_mu.in_features == 1024 * 2 * 2
    assert vae.fc_dec.in_features == 33 and vae.fc_dec.out_features == 1024 * 4 * 4
    deconvs = [m.out_channels for m in vae.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert deconvs == [512, 256, 128, 3]


def test_unconditioned_vaal_variant_and_missing_r_errors():
    vae = ConditionalVAE((32, 32), z_dim=4, cond_dim=0, width=0.0625)
    recon, mu, _ = vae(torch.randn(2, 3, 32, 32))
    assert recon.shape == (2, 3, 32, 32)
    assert Discriminator(4, 0)(mu).shape == (2,)
    with pytest.raises(ValueError, match="conditioned"):
        ConditionalVAE((32, 32), z_dim=4, cond_dim=1, width=0.0625)(torch.randn(2, 3, 32, 32))


def test_bad_vae_size_names_the_key():
    with pytest.raises(ValueError, match="vae.size 40x40"):
        vae_stage_count((40, 40))


def test_rank_transforms():
    r = torch.tensor([10.0, 11.0, 12.0])
    z = RANK_TRANSFORMS["zscore"](r)
    assert z.mean().abs() < 1e-6 and z.std().item() == pytest.approx(1.0)
    assert torch.all(RANK_TRANSFORMS["sigmoid"](r) > 0.99)  # why raw ranking scores saturate a sigmoid

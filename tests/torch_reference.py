"""Helpers shared by the parity tests against transformers' PyTorch models."""
import numpy as np
import pytest


def perturb(torch, model):
    """Moves biases and norms away from their defaults so that parity tests see every parameter; eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif "norm" in name and p.ndim == 1:
                p.normal_(1.0, 0.2)
            else:
                p.normal_(0.0, float(np.prod(p.shape[1:])) ** -0.5)
    return model.eval()


class MaxDiffs(dict):
    """The largest |ours - reference| of each named check, printed once the module's tests have run."""

    def record(self, name: str, diff):
        self[name] = max(self.get(name, 0.0), float(diff))
        return diff

    def fixture(self):
        """An autouse module fixture that prints the table."""
        @pytest.fixture(scope="module", autouse=True)
        def report_diffs():
            yield
            print("\nmax |diff| vs HF:", {k: f"{v:.2e}" for k, v in sorted(self.items())})
        return report_diffs

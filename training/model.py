"""The classifier: a two-layer perceptron over flattened 28x28 MNIST images."""

from torch import Tensor, nn
from torch.nn import functional as F


class MLP(nn.Module):
    """Linear -> ReLU -> Linear, Kaiming-normal weights and zero biases.

    Input: (N, 784) float images in [0, 1], white digit on black (MNIST's `ToTensor`
    convention); any (N, 1, 28, 28) or (N, 28, 28) batch is flattened first.
    Output: (N, ydim) unnormalized logits.
    """

    def __init__(self, xdim: int = 784, hdim: int = 256, ydim: int = 10) -> None:
        super().__init__()
        self.xdim, self.hdim, self.ydim = xdim, hdim, ydim
        self.hidden = nn.Linear(xdim, hdim)
        self.output = nn.Linear(hdim, ydim)
        for layer in (self.hidden, self.output):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        # The layers' own functional form, not their `__call__`: the same math, without two
        # module dispatches that cost ~10 us of every one-image forward pass in the service.
        hidden = F.linear(x.reshape(x.shape[0], -1), self.hidden.weight, self.hidden.bias)
        return F.linear(hidden.relu(), self.output.weight, self.output.bias)

"""Fashion-MNIST (placeholder: being written)."""

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def fashion_mnist(path=None, download=False):
    raise NotImplementedError

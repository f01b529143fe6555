"""Small model zoo (MLP, 1-D/2-D CNN, small ResNet with BatchNorm, VGG-style) and the ``module:factory``
path for a user's own model. ``build(name, input_shape, num_classes, **kw)`` builds any of them."""

import importlib.util

from .conv import cnn2d, resnet, vgg
from .zoo import MODELS, build, cnn1d, from_factory, mlp, register_model

for _name, _factory in (("cnn2d", cnn2d), ("resnet", resnet), ("vgg", vgg)):
    register_model(_name, _factory)

# Optional sibling modules register more models when present (e.g. a transformer); an import error in one
# that exists is a real bug and is raised, not hidden.
if importlib.util.find_spec(f"{__name__}.transformer") is not None:
    importlib.import_module(f"{__name__}.transformer")

__all__ = ["MODELS", "build", "cnn1d", "cnn2d", "from_factory", "mlp", "register_model", "resnet", "vgg"]

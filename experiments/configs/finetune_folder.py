"""Study 4: fine-tuning a pretrained ResNet on an image folder (network-based transfer).

The survey's network-based category and PyTorch's "ants and bees" transfer-learning
tutorial: a torchvision ResNet pretrained on ImageNet, converted to Flax at start
(``model.pretrained``: a ``.safetensors`` / ``.npz`` / ``.pth`` state dict), a new head, and
one of the freezing recipes (the argument after ``:``):

* ``finetune``      -- everything trains, backbone lr x 0.1 (TLlib's multiplier);
* ``linear_probe``  -- the backbone is frozen, only the head trains;
* ``freeze<k>``     -- the first k ResNet stages (stem, layer1, ...) frozen (k = 1..4),
                       the rest fine-tuned (Yosinski et al. 2014).

Data layout (``data.source``; the same folder is the "target", evaluated on ``val``)::

  data/hymenoptera_data/train/{ants,bees}/*.jpg
  data/hymenoptera_data/val/{ants,bees}/*.jpg

  dtl-jax train --config experiments/configs/finetune_folder.py:linear_probe \
      --config.model.pretrained=weights/resnet18.safetensors \
      --config.data.source=folder:data/hymenoptera_data \
      --config.data.target=folder:data/hymenoptera_data --workdir runs/ants_bees_probe

Tutorial reference: fine-tuning the whole ResNet-18 reaches about 94-95% val accuracy
and the linear probe ("ConvNet as fixed feature extractor") about 95% on ants/bees.
"""

from dtl_jax.config import default_config

RESNET_STAGES = ("conv1|bn1", "layer1", "layer2", "layer3", "layer4")


def get_config(arg=None):
  recipe = arg or "finetune"
  c = default_config()
  c.method = "finetune"
  c.model.pretrained = "weights/resnet18.safetensors"
  c.data.image_size = 224
  c.data.normalize = "imagenet"
  c.data.source = "folder:data/hymenoptera_data"
  c.data.target = "folder:data/hymenoptera_data"
  c.data.batch_size = 4  # the tutorial's batch size
  c.data.source_val_fraction = 0.1
  c.data.eval_batch_size = 32
  c.model.backbone = "resnet18"
  c.model.bottleneck_dim = 0
  c.optim.kind = "sgd"
  c.optim.learning_rate = 0.001  # tutorial: SGD lr 0.001, momentum 0.9
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0
  c.optim.lr_gamma = 0.0
  if recipe == "finetune":
    c.optim.multipliers.backbone = 0.1
  elif recipe == "linear_probe":
    c.model.freeze = ("backbone/.*",)
  elif recipe.startswith("freeze") and recipe[len("freeze") :].isdigit():
    k = int(recipe[len("freeze") :])
    if not 1 <= k <= 4:
      raise ValueError(f"freeze<k> needs k in 1..4, got {k}")
    c.model.freeze = (f"backbone/({'|'.join(RESNET_STAGES[:k])})/.*",)
  else:
    raise ValueError(f"unknown recipe {recipe!r}; use finetune, linear_probe or freeze1..freeze4")
  c.train.num_steps = 1500  # ~25 epochs of the 244 training images at batch 4
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  return c

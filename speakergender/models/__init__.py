"""Networks: the scratch CNN and the pretrained YAMNet and VGGish backbones."""

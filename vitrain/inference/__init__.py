"""Using a trained network outside a run: text from a GPT checkpoint (``text``), SAM's masks for
prompts on an image (``sam``) and for every object in it (``segment_everything``). Library code:
the command-line tools ``python -m vitrain.generate`` and ``python -m vitrain.segment`` and the
callbacks that draw samples during training call it."""

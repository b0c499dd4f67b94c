"""The federated LoRA room (spec 05): everything that trains.

- :mod:`fedopt.fl.lora`: LoRA adapters on ``nn.Linear`` layers, flatten/unflatten of the
  adapter state (the vector of length q(r) that travels);
- :mod:`fedopt.fl.charmodel`, :mod:`fedopt.fl.pretrained`: the small causal character
  transformer and its shipped, deterministically pre-trained base checkpoint;
- :mod:`fedopt.fl.data`: the text corpus and the non-IID client split;
- :mod:`fedopt.fl.aggregators`: ideal, AirComp (exact and equivalent) and digital (SOFT over
  FDMA) aggregation of the clients' updates;
- :mod:`fedopt.fl.soft`: SOFT's sparsification of LoRA factors (torch);
- :mod:`fedopt.fl.recipe`: the training recipe (local steps, learning rate, LoRA scale) shared by
  validation and calibration;
- :mod:`fedopt.fl.loop`: rounds, local steps, the server step, accounting, checkpoints.

The planning domain (:mod:`fedopt.instance`, :mod:`fedopt.channel`, :mod:`fedopt.aircomp`,
:mod:`fedopt.plan`, :mod:`fedopt.digital`) never imports this room; only this room imports
torch. Importing ``fedopt.fl`` itself imports nothing heavy.
"""

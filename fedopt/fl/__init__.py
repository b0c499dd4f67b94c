"""The federated LoRA room (spec 05): everything that trains.

- :mod:`fedopt.fl.adapter`, :mod:`fedopt.fl.lora`: the ``LoRALinear`` adapter, applying LoRA to
  a model's ``nn.Linear`` layers, flatten/unflatten of the adapter state (the vector of length
  q(r) that travels);
- :mod:`fedopt.fl.hf` (with :mod:`~fedopt.fl.peft_adapter`, :mod:`~fedopt.fl.hf_data`,
  :mod:`~fedopt.fl.hf_tiny`): a Hugging Face causal LM from a local directory with PEFT LoRA in
  the loop (the ``fedopt[hf]`` extra): PEFT's adapters as the same flat vector, the testbed's
  text re-tokenized with the model's tokenizer;
- :mod:`fedopt.fl.charmodel` (over :mod:`~fedopt.fl.transformer`, :mod:`~fedopt.fl.training`,
  :mod:`~fedopt.fl.charmodel_io`), :mod:`fedopt.fl.pretrained`: the small causal character
  transformer, its training and checkpoints, and the shipped pre-trained base;
- :mod:`fedopt.fl.corpus`, :mod:`fedopt.fl.data`: the text corpus and vocabulary, the non-IID
  client split;
- :mod:`fedopt.fl.aggregators` (``base``, ``ideal``, ``aircomp``, ``digital``): ideal, AirComp
  (exact and equivalent) and digital (SOFT over FDMA) aggregation of the clients' updates;
- :mod:`fedopt.fl.soft`: SOFT's component scores and selection for LoRA factors (torch);
- :mod:`fedopt.fl.recipe`: the training recipe (local steps, learning rate, LoRA scale) shared by
  validation and calibration;
- :mod:`fedopt.fl.config`, :mod:`fedopt.fl.checkpoint`, :mod:`fedopt.fl.loop`: the loop's
  settings, its checkpoints and logs, and :func:`~fedopt.fl.loop.run_federated` (rounds, local
  steps, the server step, accounting).

The planning domain (:mod:`fedopt.instance`, :mod:`fedopt.channel`, :mod:`fedopt.aircomp`,
:mod:`fedopt.plan`, :mod:`fedopt.digital`) never imports this room; only this room imports
torch. Importing ``fedopt.fl`` itself imports nothing heavy.
"""

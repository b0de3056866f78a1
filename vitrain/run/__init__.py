"""The run layer: from a composed config to a run directory. The only Python that touches Hydra and
OmegaConf; tasks, models, data and callbacks receive built objects.

Read `train.py` first: `run(cfg)` checks the config, builds the parts, fits or uses the
checkpoint, evaluates and summarises, one call per step. The steps:

- `entry.py`: `main(cfg)`, what `train.py` at the repository root calls: a user mistake is one
  message and a failed `summary.json`, never a traceback;
- `cli.py`: the command line around Hydra: a config that does not compose is one message
  ("did you mean ...?");
- `resolvers.py`: the `${...:}` resolvers of `conf/` (the task's metric, loader workers, ...);
- `checks.py`: the checks that need no data (pairing, mode, value ranges, precision, processes);
- `scale.py`: the global batch (accumulation and learning-rate scaling);
- `build.py`: the task (its network loaded and adapted), the DataModule, callbacks, loggers, trainer;
- `stored_config.py`: checkpoints that carry their `model` and `data` configs;
- `lifecycle.py`: the run directory (resume, finished runs, history trimming, preemption hand-off);
- `evaluate.py`: the data read early, the held-out test split, a checkpoint's eval / test;
- `modes.py`: `mode=eval|test|export|predict` of a checkpoint;
- `summary.py`: `summary.json`, written in one place;
- `config_tree.py`: the config printed at start and saved;
- `ddp_sweeps.py`: DDP inside a Hydra multirun.
"""

from vitrain.run import resolvers  # noqa: F401  (registers the ${task_monitor:} resolvers, as train.py needs)
from vitrain.run.entry import main
from vitrain.run.train import run

__all__ = ["main", "run"]

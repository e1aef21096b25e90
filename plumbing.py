"""The plumbing every script shares; a leaf: it imports no other project file, and every project file may import it.

errors       ConfigError, DataError, check_choice, check_ranges   bad input, printed by cli() as one line, exit 2
flags        parse_flags, print_help, cli          --key=value parsed by a dataclass's field types; --help lists them
device       setup_device                          auto / cuda / cpu / mps, the dtype and its autocast context
checkpoints  checkpoint_path, load_checkpoint, save_atomic
run folder   resume_checkpoint, start_run, refuse_a_checkpoint, lock_run_folder, open_run_folder, append_log, read_log
RNG          rng_state, restore_rng                every generator a run draws from, saved and restored together
text, plots  eta_text, tokens_per_step, pyplot

Design choices:
- A config dataclass is the whole interface of a script: its fields are the flags, their types parse the values,
  the comments beside them are the --help text, and its __post_init__ holds its rules, so a bad value is refused
  wherever a config is built (flags, a resumed checkpoint's config, dataclasses.replace).
- One run lifecycle for train.py and seekr.py (start_run): --resume reads the checkpoint's config and lets the
  flags override it; an out_dir that already holds a checkpoint is never overwritten; --init_from takes the model's
  shape from the source run and refuses flags that contradict its weights.
- Checkpoints are written to a temp file and renamed, so a kill mid-write leaves the previous one whole.
"""

import atexit
import dataclasses
import difflib
import inspect
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch


class ConfigError(ValueError):
    """Bad configuration from the user (flags, checkpoints): printed as one line by cli(), no traceback."""


class DataError(ValueError):
    """Bad data from the user (corpora, token files, task folders): printed as one line by cli(), no traceback."""


def check_choice(flag, value, allowed):
    """Raise ConfigError naming the allowed values (and the closest one) unless value is among them. An allowed ""
    (a flag left unset) is not listed."""
    if value not in allowed:
        shown = [str(a) for a in allowed if a != ""]
        close = difflib.get_close_matches(str(value), shown, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"--{flag}={value} is not one of {', '.join(shown)}{hint}")


def check_ranges(cfg, ranges):
    """Raise ConfigError for the first field of cfg outside its interval. ranges: {field: "[0, 1)"}, the
    mathematician's notation: a square bracket includes the end, a round one excludes it, inf is unbounded."""
    for key, interval in ranges.items():
        value = getattr(cfg, key)
        low, high = (float(end) for end in interval[1:-1].split(","))
        above = value >= low if interval[0] == "[" else value > low
        below = value <= high if interval[-1] == "]" else value < high
        if not (above and below):
            if high == math.inf:
                rule = f"{'>=' if interval[0] == '[' else '>'} {low:g}"
            else:
                rule = f"lie in {interval}"
            raise ConfigError(f"--{key}={value} must {'be ' if high == math.inf else ''}{rule}")


# ----------------------------------------------------------------------------------------------------------------
# flags


def parse_value(key, text, typ):
    if typ is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"--{key}={text} is not a boolean; use --{key}=true or --{key}=false")
    try:
        return typ(text)
    except ValueError:
        raise ConfigError(
            f"--{key}={text} is not {'an integer' if typ is int else 'a number'}"
        ) from None


def parse_flags(argv, config_cls, choices=None):
    """argv -> dict of the fields set by flags, parsed by the field types. Unknown keys name the closest valid
    ones; values of the fields in choices ({field: allowed values}) must be among the allowed ones."""
    fields = {f.name: f.type for f in dataclasses.fields(config_cls)}
    if "--help" in argv or "-h" in argv:
        print_help(config_cls)
        sys.exit(0)
    overrides = {}
    for arg in argv:
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; flags look like --key=value")
        key, _, text = arg[2:].partition("=")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            raise ConfigError(
                f"unknown flag --{key}"
                + (
                    f" (did you mean {', '.join('--' + c for c in close)}?)"
                    if close
                    else "; see --help"
                )
            )
        if (
            fields[key] is list
        ):  # a list flag may repeat and holds comma-separated items: --run=a --run=b,c
            overrides[key] = overrides.get(key, []) + [item for item in text.split(",") if item]
        else:
            overrides[key] = parse_value(key, text if "=" in arg else "true", fields[key])
    for key, allowed in (choices or {}).items():
        if key in overrides:
            check_choice(key, overrides[key], allowed)
    return overrides


def print_help(config_cls, defaults=None, note=""):
    """Every flag with its default and the comment beside it in the dataclass's source (its bases' too).
    defaults: {field: value} shown instead of the dataclass's (train.py: what a run with no flags uses)."""
    comments = {}
    for klass in config_cls.__mro__:
        if dataclasses.is_dataclass(klass):
            for line in inspect.getsource(klass).splitlines():
                name, _, rest = line.strip().partition(":")
                if "#" in rest:
                    comments.setdefault(name, rest.split("#", 1)[1].strip())
    own = list(config_cls.__annotations__)  # the script's own fields first, then those of its bases
    fields = sorted(dataclasses.fields(config_cls), key=lambda f: f.name not in own)
    print(f"flags (--key=value; --flag alone means true), from {config_cls.__name__}{note}:")
    for f in fields:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = (defaults or {}).get(f.name, default)
        print(f"  --{f.name}={default}" + (f"  # {comments[f.name]}" if f.name in comments else ""))


def cli(main):
    """Run main(sys.argv[1:]): bad input ends as one line on stderr and exit code 2; bugs still raise."""
    sys.stdout.reconfigure(
        line_buffering=True
    )  # progress lines arrive as they are printed, even through a pipe
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (
        BrokenPipeError
    ):  # the reader went away (`python train.py --help | head`): stop quietly, as Unix tools do
        os.dup2(
            os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()
        )  # nothing left to flush at exit
        sys.exit(1)


# ----------------------------------------------------------------------------------------------------------------
# device


def setup_device(device, dtype, fp16=True):
    """'auto'/'cuda'/... and 'auto'/'bfloat16'/... -> (device, dtype name, autocast context). dtype auto: bfloat16
    on a GPU that computes it (compute capability 8.0 on: A100, H100, RTX 30xx/40xx), else float16 with loss
    scaling (T4, V100; fp16=False: float32 instead, for code without a gradient scaler), float32 off CUDA."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device=cuda but this torch sees no CUDA GPU; use --device=auto or --device=cpu"
        )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "--device=mps but MPS is not available here; use --device=auto or --device=cpu"
        )
    dtype = pick_dtype(
        dtype, device, torch.cuda.get_device_capability() if device == "cuda" else None, fp16
    )
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ctx = (
        nullcontext()
        if dtype == "float32"
        else torch.autocast(device_type=device, dtype=getattr(torch, dtype))
    )
    return device, dtype, ctx


def pick_dtype(dtype, device, capability=None, fp16=True):
    """--dtype=auto resolved for a device and, on CUDA, its compute capability (major, minor)."""
    if dtype != "auto":
        return dtype
    if device != "cuda":
        return "float32"
    if capability >= (8, 0):  # bf16 tensor cores: A100, H100, RTX 30xx / 40xx, L40
        return "bfloat16"
    return (
        "float16" if fp16 else "float32"
    )  # T4, V100: fp16, with loss scaling where the caller has a scaler


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_path(path):
    """A checkpoint file, or a run folder holding ckpt.pt."""
    p = Path(path)
    return p / "ckpt.pt" if p.is_dir() else p


def load_checkpoint(path, device="cpu"):
    """A checkpoint written by this project (train.py, seekr.py): a dict with model, model_config and config.
    Anything else (missing, truncated, corrupt, another program's file) is one ConfigError naming the file."""
    p = checkpoint_path(path)
    if not p.is_file():
        raise ConfigError(f"no checkpoint at {p}")
    try:
        ckpt = torch.load(p, map_location=device, weights_only=True)
    except (
        Exception
    ):  # torch raises UnpicklingError, RuntimeError, EOFError, ... with advice that does not apply
        raise ConfigError(
            f"{p} is not a readable checkpoint (truncated, corrupt, or not a torch file); pass a "
            "ckpt.pt or budget_<b>.pt written by train.py"
        ) from None
    if not isinstance(ckpt, dict) or not {"model", "model_config", "config"} <= set(ckpt):
        raise ConfigError(
            f"{p} is a torch file but not a checkpoint of this project (no model, model_config and "
            "config in it); pass a ckpt.pt or budget_<b>.pt written by train.py"
        )
    return ckpt


def save_atomic(obj, path):
    """torch.save to a temp file, then rename: a kill mid-write never leaves a half checkpoint, and a failed write
    (a full disk) removes its temp file and leaves the previous checkpoint as it was."""
    tmp = Path(str(path) + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):  # torch reports a failed write as RuntimeError
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"could not write {path} ({reason}); free some disk space or choose another "
                "--out_dir (the previous checkpoint is untouched)"
            ) from None
        raise


# ----------------------------------------------------------------------------------------------------------------
# the run folder


def resume_checkpoint(out_dir):
    """The checkpoint --resume continues: out_dir/ckpt.pt. Its config, then the flags, make the run's config."""
    p = Path(out_dir) / "ckpt.pt"
    if not p.exists():
        raise ConfigError(f"--resume but {p} does not exist; start without --resume")
    return load_checkpoint(p)


def start_run(cfg, overrides, saved, shape_keys):
    """The run lifecycle shared by train.py and seekr.py -> (cfg, saved, source).
    --resume (saved: resume_checkpoint's, cfg built on its config): a flag that contradicts the weights is refused.
    Otherwise an out_dir that already holds a checkpoint is refused, and with --init_from, source = that checkpoint
    and cfg takes the shape_keys (model shape, tokenizer) from it unless a flag sets them; a flag that contradicts
    the weights is refused. cfg is rebuilt with dataclasses.replace, so its __post_init__ checks the result."""
    out = Path(cfg.out_dir)
    if saved is not None:
        adopted_shape(saved["config"], overrides, shape_keys, f"--resume: {out}/ckpt.pt")
        return cfg, saved, None
    refuse_a_checkpoint(out)
    if not cfg.init_from:
        return cfg, None, None
    source = load_checkpoint(cfg.init_from)
    shape = adopted_shape(source["config"], overrides, shape_keys, f"--init_from={cfg.init_from}")
    return dataclasses.replace(cfg, **shape), None, source


def adopted_shape(theirs, overrides, keys, who):
    """{key: the source's value} for the keys no flag sets; a flag that sets one to something else is refused
    (dropout may change between runs; pos=auto means the source's)."""
    shape = {}
    for key in keys:
        given = overrides.get(key)
        if key not in overrides or (key == "pos" and given == "auto"):
            shape[key] = theirs[key]
        elif given != theirs[key] and key != "dropout":
            raise ConfigError(
                f"{who} holds a model with {key}={theirs[key]}, but this run asks for --{key}={given}; "
                "drop the flag or use another checkpoint"
            )
    return shape


def refuse_a_checkpoint(out):
    """A new run (not --resume) never writes over a folder that holds a checkpoint."""
    if (Path(out) / "ckpt.pt").exists():
        raise ConfigError(
            f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out_dir"
        )


def lock_run_folder(out, fresh):
    """Create out/ and hold out/run.lock (this process's pid) until release() or exit: a second live run on the
    same folder is refused, a lock left by a killed process is taken over. An out_dir that is a file or cannot be
    written is refused here, before any data is prepared. fresh (not --resume): start_run saw no checkpoint, and
    that is checked again under the lock, since another run may have finished one in between. -> release()."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out_dir={out} is a file, not a folder; choose another --out_dir")
    lock = out / "run.lock"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                pid = _lock_owner(lock)
                if not pid:  # empty: its owner may have created it and not yet written its pid
                    time.sleep(0.2)
                    pid = _lock_owner(lock)
                if pid and pid != os.getpid() and _alive(pid):
                    raise ConfigError(
                        f"{out} is in use by a running process (pid {pid}); wait for it, stop it, or "
                        "choose another --out_dir"
                    ) from None
                lock.unlink(missing_ok=True)  # left by a process that is gone
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
    except OSError as e:
        raise ConfigError(
            f"--out_dir={out} cannot be written ({e.strerror or e}); choose another --out_dir"
        ) from None

    def release():
        if _lock_owner(lock) == os.getpid():
            lock.unlink(missing_ok=True)

    if fresh and (out / "ckpt.pt").exists():
        release()
        refuse_a_checkpoint(out)
    atexit.register(release)
    return release


def _lock_owner(lock):
    """The pid in a run.lock, or 0 when it is gone or unreadable."""
    try:
        return int(lock.read_text())
    except (OSError, ValueError):
        return 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def open_run_folder(out, cfg, keep):
    """Create out/, write config.json, and keep only the log.jsonl rows for which keep(row) holds (a resumed run
    redoes what was logged after its checkpoint)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    kept = [r for r in read_log(out) if keep(r)]
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))


def append_log(out, row):
    with open(Path(out) / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def read_log(out_dir):
    """The rows of log.jsonl; a last line cut short by a killed run is dropped."""
    path = Path(out_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]] if path.exists() else []


# ----------------------------------------------------------------------------------------------------------------
# RNG state


def rng_state(device, **generators):
    """Every RNG a run draws from: torch's global CPU and CUDA generators and the named torch.Generators."""
    return {
        **{name: g.get_state() for name, g in generators.items()},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if device.startswith("cuda") else None,
    }


def restore_rng(state, device, **generators):
    for name, g in generators.items():
        g.set_state(state[name])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# text and plots


def eta_text(elapsed, done, left, first=0.0):
    """'elapsed 1m05s | eta 3m10s': the ETA from the average speed so far (done steps in elapsed seconds). first: the
    seconds the session's first step took, left out of the average once there are others (compile, first
    allocations and the first eval never recur; with them a GPU run's early ETAs are hours too long)."""
    eta = (
        (elapsed - first) / (done - 1) * left
        if first and done > 1
        else elapsed / max(done, 1) * left
    )
    return f"elapsed {int(elapsed // 60)}m{int(elapsed % 60):02d}s | eta {int(eta // 60)}m{int(eta % 60):02d}s"


def tokens_per_step(cfg):
    """Tokens in one optimizer step of a run (its Config, or the dict in config.json / a checkpoint)."""
    c = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    return c["batch_size"] * c["block_size"] * c["grad_accum"]


def pyplot():
    """matplotlib.pyplot on the headless Agg backend: figures are files, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

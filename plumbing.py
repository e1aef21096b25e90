"""The plumbing every script shares; a leaf: it imports no other project file.

errors       ConfigError, DataError, check_declared (choices, ranges): bad input, one line
flags        build_config, parse_flags, print_help, flag_fields, settings, cli
device       RunConfig, setup_device, setup_process, join/leave_process_group, CtrlC
divergence   check_loss (at log steps), check_weights (before a save): nan or inf stops the run
checkpoints  checkpoint_path, load_checkpoint, save_atomic
run folder   RunFolder: resume, refuse, init_from, lock, config.json and log.jsonl in one `with`;
             resumed_config, append_log, read_log (start_run, lock_run_folder, open_run_folder)
RNG          rng_state, restore_rng: every generator a run draws from, saved and restored;
             rank_rng_states, restore_rank_rng: each DDP rank's own
text         eta_text, Stopwatch, progress_text, interrupted_text, tokens_per_step, mean_std

- A config dataclass is a script's interface: its fields are the flags, their types parse the
  values, the comments beside (or right above) them are --help's text, its __post_init__ holds
  the rules, so a bad value is refused wherever a config is built. A class attribute `not_flags`
  names fields a run derives: no flags, and config.json leaves them out.
- A new run never writes over a folder holding a checkpoint; --init_from takes the model's shape
  from the source and refuses flags that contradict its weights. Checkpoints are written to a temp
  file and renamed, so a kill mid-write leaves the previous one whole.
"""

import atexit
import dataclasses
import difflib
import gc
import inspect
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


class ConfigError(ValueError):
    """Bad configuration from the user (flags, checkpoints): printed as one line by cli(), no
    traceback."""


class DataError(ValueError):
    """Bad data from the user (corpora, token files, task folders): printed as one line by cli(), no
    traceback."""


def check_choice(flag, value, allowed):
    """Raise ConfigError naming the allowed values (and the closest one) unless value is among them.
    An allowed "" (a flag left unset) is not listed."""
    if value not in allowed:
        shown = [str(a) for a in allowed if a != ""]
        close = difflib.get_close_matches(str(value), shown, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"--{flag}={value} is not one of {', '.join(shown)}{hint}")


def check_declared(cfg, choices, ranges=None):
    """A config's declarations, checked in one call from its __post_init__: each field in choices
    ({field: allowed values}) among them, then each field in ranges inside its interval."""
    for key, allowed in choices.items():
        check_choice(key, getattr(cfg, key), allowed)
    check_ranges(cfg, ranges or {})


def check_ranges(cfg, ranges):
    """Raise ConfigError for the first field of cfg outside its interval. ranges: {field: "[0, 1)"},
    the mathematician's notation: a square bracket includes the end, a round one excludes it, inf
    is unbounded."""
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


# ------------------------------------------------------------------------------------------------
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


def flag_fields(config_cls):
    """The dataclass fields that are flags: all but those the class names in `not_flags`."""
    hidden = getattr(config_cls, "not_flags", ())
    return [f for f in dataclasses.fields(config_cls) if f.name not in hidden]


def settings(cfg):
    """{flag: value} of a config: what config.json and a checkpoint's "config" hold."""
    return {f.name: getattr(cfg, f.name) for f in flag_fields(type(cfg))}


def parse_flags(argv, config_cls, choices=None, defaults=None, note=""):
    """argv -> dict of the fields set by flags, parsed by the field types. Unknown keys name the
    closest valid ones; values of the fields in choices ({field: allowed values}) must be among
    the allowed ones. --help or -h prints print_help(config_cls, defaults, note, choices), exits."""
    fields = {f.name: f.type for f in flag_fields(config_cls)}
    if "--help" in argv or "-h" in argv:
        print_help(config_cls, defaults, note, choices)
        sys.exit(0)
    overrides = {}
    for arg in argv:
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; flags look like --key=value")
        key, _, text = arg[2:].partition("=")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
            raise ConfigError(f"unknown flag --{key}" + (hint or "; see --help"))
        if fields[key] is list:  # a list flag may repeat and holds comma-separated items
            overrides[key] = overrides.get(key, []) + [item for item in text.split(",") if item]
        else:
            overrides[key] = parse_value(key, text if "=" in arg else "true", fields[key])
    for key, allowed in (choices or {}).items():
        if key in overrides:
            check_choice(key, overrides[key], allowed)
    return overrides


def print_help(config_cls, defaults=None, note="", choices=None):
    """Every flag with its default, the comment beside it in the dataclass's source (its bases'
    too) and its choices. defaults: {field: value} shown instead of the dataclass's (train.py:
    what a run with no flags uses); choices: {field: allowed values}."""
    comments = field_comments(config_cls)
    own = list(config_cls.__annotations__)  # the script's own fields first, then its bases'
    fields = sorted(flag_fields(config_cls), key=lambda f: f.name not in own)
    print(f"flags (--key=value; --flag alone means true), from {config_cls.__name__}{note}:")
    for f in fields:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = (defaults or {}).get(f.name, default)
        text = comments.get(f.name, "")
        allowed = [str(a) for a in (choices or {}).get(f.name, ()) if a != ""]
        if allowed:
            text += f"{'; ' if text else ''}one of {', '.join(allowed)}"
        print(f"  --{f.name}={default}" + (f"  # {text}" if text else ""))


def build_config(argv, config_cls, choices, presets, fallback, modes=None, notice=""):
    """argv -> (cfg, the flags, the checkpoint --resume continues or None). What the flags override:
    --preset's values (else the fallback preset's, and notice is printed), or for a --mode in modes
    ({mode: its defaults}) --preset's and the mode's; with --resume, the checkpoint's config.
    --help lists every flag with the values a run of those flags starts from."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--preset=")]
    picked = not (given and given[-1] in presets)
    preset = fallback if picked else given[-1]
    base = {**presets[preset], "preset": preset}
    note = f" (defaults: what --preset={preset} runs; a flag overrides it)"
    flags = parse_flags(argv, config_cls, choices, base, note)
    if flags.get("mode") in (modes or {}):
        base = {**presets.get(flags.get("preset"), {}), **modes[flags["mode"]]}
    elif picked and notice and not flags.get("resume"):
        print(notice)
    base, saved = resumed_config(flags, base, config_cls)
    return config_cls(**{**base, **flags}), flags, saved


def field_comments(config_cls):
    """{field: its help}: the comment beside the field, or the comment lines right above it when
    they follow another field (a comment after a blank line or the class line heads a section)."""
    comments = {}
    for klass in config_cls.__mro__:
        if not dataclasses.is_dataclass(klass):
            continue
        above = []
        after_field = False
        for line in inspect.getsource(klass).splitlines():
            text = line.strip()
            if text.startswith("#") and (after_field or above):
                above.append(text[1:].strip())
                continue
            name, colon, rest = text.partition(":")
            after_field = bool(colon) and name in klass.__dataclass_fields__
            if after_field:
                comment = rest.split("#", 1)[1].strip() if "#" in rest else " ".join(above)
                if comment:
                    comments.setdefault(name, comment)
            above = []
    return comments


def cli(main):
    """Run main(sys.argv[1:]): bad input ends as one line on stderr and exit code 2; bugs still
    raise."""
    sys.stdout.reconfigure(line_buffering=True)  # progress lines arrive as printed, even piped
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # the reader went away (`train.py --help | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        sys.exit(1)


# ------------------------------------------------------------------------------------------------
# device


def setup_device(device, dtype, fp16=True):
    """'auto'/'cuda'/... and 'auto'/'bfloat16'/... -> (device, dtype name, autocast context). dtype
    auto: bfloat16 on a GPU that computes it (compute capability 8.0 on: A100, H100, RTX
    30xx/40xx), else float16 with loss scaling (T4, V100; fp16=False: float32 instead, for code
    without a gradient scaler), float32 off CUDA."""
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
    capability = torch.cuda.get_device_capability() if device == "cuda" else None
    dtype = pick_dtype(dtype, device, capability, fp16)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if dtype == "float32":
        return device, dtype, nullcontext()
    return device, dtype, torch.autocast(device_type=device, dtype=getattr(torch, dtype))


def pick_dtype(dtype, device, capability=None, fp16=True):
    """--dtype=auto resolved for a device and, on CUDA, its compute capability (major, minor)."""
    if dtype != "auto":
        return dtype
    if device != "cuda":
        return "float32"
    if capability >= (8, 0):  # bf16 tensor cores: A100, H100, RTX 30xx / 40xx, L40
        return "bfloat16"
    return "float16" if fp16 else "float32"  # T4, V100: fp16, with loss scaling (a scaler)


@dataclass
class RunConfig:
    """The settings the plumbing reads, declared once: train.py's Config inherits them (they are
    its flags); RunFolder reads the run folder's, setup_process the device's."""

    out_dir: str = "out/run"
    resume: bool = False
    init_from: str = ""  # a checkpoint (or run folder) whose weights start this run
    device: str = "auto"  # auto: cuda when there is one, else cpu
    # auto: bfloat16 on CUDA >= sm80, float16 + loss scaling before, else float32
    dtype: str = "auto"
    compile: str = "auto"  # auto: on for CUDA

    def __post_init__(self):
        check_declared(self, RUN_CHOICES)


RUN_CHOICES = dict(
    device=("auto", "cpu", "cuda", "mps"),
    dtype=("auto", "float32", "bfloat16", "float16"),
    compile=("auto", "true", "false"),
)


@dataclass
class Process:
    """Where this process runs: its DDP rank, device and precision."""

    ddp: bool
    rank: int
    world: int
    device: str
    dtype: str
    autocast: object
    compile: bool

    @property
    def master(self):
        return self.rank == 0


def setup_process(cfg):
    """cfg's device, dtype and compile, this process's DDP rank (under torchrun) and the torch seed
    -> Process. The process group comes after the data (join_process_group): a first download of
    FineWeb must not time out a collective."""
    ddp = "RANK" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    if cfg.grad_accum % world:
        raise ConfigError(
            f"--grad_accum={cfg.grad_accum} is not divisible by the {world} DDP processes"
        )
    device, dtype, autocast = setup_device(cfg.device, cfg.dtype)
    use_compile = cfg.compile == "true" or (cfg.compile == "auto" and device == "cuda")
    if ddp and device == "cuda":
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed + rank)  # dropout differs per rank; the batch generator is shared
    return Process(ddp, rank, world, device, dtype, autocast, use_compile)


class CtrlC:
    """Ctrl-C asks a training loop to stop after its step (it saves, then exits) instead of killing
    it mid-step. pressed(sync): whether it was asked; under DDP the ranks agree only where sync
    (the loop's log steps: an all-reduce and .item() is a host sync), so every rank stops at the
    same step when any of them got it."""

    def __init__(self, proc):
        self.proc = proc
        self.asked = False
        signal.signal(signal.SIGINT, self.ask)

    def ask(self, *_):
        self.asked = True

    def pressed(self, sync=True):
        if not self.proc.ddp:
            return self.asked
        if not sync:  # a rank that got it waits for the next agreed step
            return False
        flag = torch.tensor(float(self.asked), device=self.proc.device)
        dist.all_reduce(flag)
        self.asked = bool(flag.item())
        return self.asked


def check_loss(loss, where, out_dir):
    """A loss (a float, read at a log step) that is nan or inf stops the run: ConfigError."""
    if not math.isfinite(loss):
        raise ConfigError(diverged_text(f"the loss is {loss}", where, out_dir))


def check_weights(model, where, out_dir):
    """Before a save: weights that hold a nan or inf stop the run (ConfigError), so they never
    replace the last good checkpoint. One host sync, at saves only."""
    finite = torch.stack([p.isfinite().all() for p in model.parameters()]).all()
    if not finite.item():
        raise ConfigError(diverged_text("the weights hold nan or inf", where, out_dir))


def diverged_text(what, where, out_dir):
    return (
        f"training diverged: {what} at {where}; stopped without saving, so {out_dir}/ckpt.pt keeps "
        "the last good state, if any; lower --lr, keep --grad_clip on (e.g. 1.0) or try "
        "--dtype=float32, then start again or --resume"
    )


def interrupted_text(out_dir, it):
    return (
        f"interrupted: saved {out_dir}/ckpt.pt at iter {it}; continue with --out_dir={out_dir} "
        "--resume"
    )


def leave_process_group(proc, run):
    """All DDP ranks leave together, the DDP module's reducer (which holds the group) first: a gloo
    group torn down at exit while a peer still works can abort the process."""
    if proc.ddp:
        dist.barrier()
        run.model = None
        run.ddp = None
        gc.collect()
        dist.destroy_process_group()


def wrap_model(model, proc):
    """-> (the model the loop calls, the DDP module or None): under torchrun DDP, then
    torch.compile of it (PyTorch's DDP + compile advice: the gradient all-reduce overlaps the
    backward pass); compile alone on one GPU; the model itself on CPU."""
    ddp = None
    if proc.ddp:
        local = [torch.device(proc.device).index] if proc.device.startswith("cuda") else None
        model = ddp = DDP(model, device_ids=local)
        if torch.__version__ < "2.6":  # its graph splitter takes no checkpointed region before 2.6
            from torch import _dynamo  # (pytorch#104674): one graph for DDP then, no overlap

            _dynamo.config.optimize_ddp = False
    if proc.compile:
        model = torch.compile(model)
    return model, ddp


def join_process_group(proc):
    """Under torchrun, join the group: nccl on CUDA, bound to this rank's GPU (device_id: the
    communicator is made eagerly for that device, no guess from the current one), gloo on CPU."""
    if not proc.ddp:
        return
    if not proc.device.startswith("cuda"):
        dist.init_process_group(backend="gloo")
        return
    bind = dict(device_id=torch.device(proc.device)) if BINDS_DEVICE else {}
    dist.init_process_group(backend="nccl", **bind)


# init_process_group takes device_id since torch 2.3; without it, nccl guesses the GPU lazily
BINDS_DEVICE = "device_id" in inspect.signature(dist.init_process_group).parameters


# ------------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_path(path):
    """A checkpoint file, or a run folder holding ckpt.pt."""
    p = Path(path)
    return p / "ckpt.pt" if p.is_dir() else p


def load_checkpoint(path, device="cpu"):
    """A checkpoint written by this project (train.py, continual.py): a dict with model,
    model_config and config. Anything else (missing, truncated, corrupt, another program's file) is
    one ConfigError naming the file."""
    p = checkpoint_path(path)
    if not p.is_file():
        raise ConfigError(f"no checkpoint at {p}")
    try:
        ckpt = torch.load(p, map_location=device, weights_only=True)
    except Exception:  # UnpicklingError, RuntimeError, EOFError, ...: torch's advice does not apply
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
    """torch.save to a temp file, then rename: a kill mid-write never leaves a half checkpoint, and
    a failed write (a full disk) removes its temp file and leaves the previous checkpoint as it
    was."""
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


# ------------------------------------------------------------------------------------------------
# the run folder


class RunFolder:
    """The run folder's life: `with RunFolder(cfg, flags, saved, shape_keys) as (cfg, saved,
    source):`. Entering: start_run's checks (--resume, a folder holding a checkpoint, --init_from:
    source and its shape_keys), then (lock=True; a DDP rank but 0 passes False) out_dir locked,
    config.json written, and the log.jsonl rows for which keep(row, saved) holds kept (default
    logged_before; a new run starts it empty). Leaving: the lock released. It keeps no reference
    to what it hands over: the caller frees the checkpoints once the model holds them. load reads
    --init_from (gpt2.load_checkpoint: GPT-2's weights too)."""

    def __init__(self, cfg, flags, saved, shape_keys, keep=None, lock=True, load=None):
        self.opened = start_run(cfg, flags, saved, shape_keys, load or load_checkpoint)
        self.keep = keep or logged_before
        self.release = lambda: None
        self.lock = lock

    def __enter__(self):
        cfg, saved, _ = self.opened
        if self.lock:
            self.release = lock_run_folder(cfg.out_dir, fresh=saved is None)
            open_run_folder(
                cfg.out_dir, cfg, lambda row: saved is not None and self.keep(row, saved)
            )
        opened = self.opened
        self.opened = None  # no reference left here: the caller frees the checkpoints
        self.keep = None
        return opened

    def __exit__(self, *exc):
        self.release()


def logged_before(row, saved):
    """Whether a row was logged before the checkpoint saved: by the compute (tokens) spent."""
    return row["tokens"] <= saved["tokens"]


def resumed_config(flags, base, config_cls):
    """-> (the values the flags override, the checkpoint --resume continues or None): base, or with
    --resume the checkpoint's config (its fields of config_cls). Its batches continue the data it
    trained on, so another --dataset is refused."""
    if not flags.get("resume"):
        return base, None
    out_dir = flags.get("out_dir", base.get("out_dir", config_cls.out_dir))
    path = Path(out_dir) / "ckpt.pt"
    if not path.exists():
        raise ConfigError(f"--resume but {path} does not exist; start without --resume")
    saved = load_checkpoint(path)
    base = {k: v for k, v in saved["config"].items() if k in config_cls.__dataclass_fields__}
    theirs = base.get("dataset", getattr(config_cls, "dataset", None))
    if flags.get("dataset", theirs) != theirs:
        raise ConfigError(
            f"--resume continues {out_dir}/ckpt.pt on --dataset={theirs}, but this run asks "
            f"for --dataset={flags['dataset']}; drop --dataset to continue it, or train its "
            f"weights on that data in a new run: --init_from={out_dir} with another --out_dir"
        )
    return base, saved


def start_run(cfg, overrides, saved, shape_keys, load=None):
    """The first half of RunFolder -> (cfg, saved, source): --resume's and --init_from's checks
    (load(init_from): its checkpoint), a fresh run's refusal of a folder holding a checkpoint. cfg
    is rebuilt with dataclasses.replace, so its __post_init__ checks the result."""
    out = Path(cfg.out_dir)
    if saved is not None:
        adopted_shape(saved["config"], overrides, shape_keys, f"--resume: {out}/ckpt.pt")
        return cfg, saved, None
    refuse_a_checkpoint(out)
    if not cfg.init_from:
        return cfg, None, None
    source = (load or load_checkpoint)(cfg.init_from)
    who = f"--init_from={cfg.init_from}"
    shape = adopted_shape(source["config"], overrides, shape_keys, who, crop=True)
    return dataclasses.replace(cfg, **shape), None, source


def adopted_shape(theirs, overrides, keys, who, crop=False):
    """{key: the source's value} for the keys no flag sets; a flag that sets one to something else
    is refused, but for those that fix no weight: dropout, and block_size unless positions are
    learned (a rope, alibi, kerple or nope model runs at any length); with crop (--init_from), a
    smaller block_size crops learned positions (GPT.load_weights). pos=auto means the source's;
    a key its config lacks (written before the field existed) keeps the field's default."""
    free = ("dropout",) if theirs.get("pos") == "learned" else ("dropout", "block_size")
    shape = {}
    for key in keys:
        if key not in theirs:
            continue
        given = overrides.get(key)
        if key not in overrides or (key == "pos" and given == "auto"):
            shape[key] = theirs[key]
        elif key == "block_size" and crop and given < theirs[key]:
            continue  # learned positions cropped to the run's block_size
        elif given != theirs[key] and key not in free:
            why = " (its learned positions fix it)" if key == "block_size" else ""
            raise ConfigError(
                f"{who} holds a model with {key}={theirs[key]}{why}, but this run asks for "
                f"--{key}={given}; drop the flag or use another checkpoint"
            )
    return shape


def refuse_a_checkpoint(out):
    """A new run (not --resume) never writes over a folder that holds a checkpoint."""
    if (Path(out) / "ckpt.pt").exists():
        raise ConfigError(
            f"{out} already holds a checkpoint; pass --resume to continue it or choose another "
            "--out_dir"
        )


def lock_run_folder(out, fresh):
    """Create out/ and hold out/run.lock (this process's pid) until release() or exit: a second live
    run on the same folder is refused, a lock left by a killed process is taken over. An out_dir
    that is a file or cannot be written is refused here, before any data is prepared. fresh (not
    --resume): start_run saw no checkpoint, and that is checked again under the lock, since
    another run may have finished one in between. -> release()."""
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
                if pid and pid != os.getpid() and alive(pid):
                    raise ConfigError(
                        f"{out} is in use by a running process (pid {pid}); wait for it, "
                        "stop it, or choose another --out_dir"
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


def alive(pid):
    """Whether process pid runs (a lock's owner, a download's .part<pid> writer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def open_run_folder(out, cfg, keep):
    """Create out/, write config.json, and keep only the log.jsonl rows for which keep(row) holds (a
    resumed run redoes what was logged after its checkpoint)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(settings(cfg), indent=2))
    kept = [r for r in read_log(out) if keep(r)]
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))


def append_log(out, row):
    with open(Path(out) / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def read_log(out_dir):
    """The rows of log.jsonl; a last line cut short by a killed run is dropped."""
    path = Path(out_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]] if path.exists() else []


# ------------------------------------------------------------------------------------------------
# RNG state


def rng_state(device, **generators):
    """Every RNG a run draws from: torch's global CPU and CUDA generators and the named
    torch.Generators."""
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


def rank_rng_states(proc, **generators):
    """[rng_state of rank 0, of rank 1, ...]: every DDP rank's own (a collective: all call it), so
    a resumed rank draws its own dropout masks, not rank 0's."""
    mine = rng_state(proc.device, **generators)
    if not proc.ddp:
        return [mine]
    states = [None] * proc.world
    dist.all_gather_object(states, mine)
    return [{k: v if v is None else v.cpu() for k, v in s.items()} for s in states]


def restore_rank_rng(states, proc, **generators):
    """rank_rng_states' list -> this rank's RNG state. A dict (a checkpoint written before the
    list) is every rank's; a rank the checkpoint lacks (more processes than it had) keeps its own
    seeded state and takes the shared generators from rank 0."""
    states = [states] if isinstance(states, dict) else states
    if proc.rank < len(states):
        restore_rng(states[proc.rank], proc.device, **generators)
    else:
        for name, g in generators.items():
            g.set_state(states[0][name])


# ------------------------------------------------------------------------------------------------
# text


def eta_text(elapsed, done, left, first=0.0):
    """'elapsed 1m05s | eta 3m10s': the ETA from the average speed so far (done steps in elapsed
    seconds). first: the seconds the session's first step took, left out of the average once
    there are others (compile, first allocations and the first eval never recur; with them a GPU
    run's early ETAs are hours too long)."""
    eta = (
        (elapsed - first) / (done - 1) * left
        if first and done > 1
        else elapsed / max(done, 1) * left
    )
    return (
        f"elapsed {int(elapsed // 60)}m{int(elapsed % 60):02d}s | "
        f"eta {int(eta // 60)}m{int(eta % 60):02d}s"
    )


class Stopwatch:
    """A session's clock for the progress lines: step() after each step, lap() the seconds per
    step since the last lap, eta(left) eta_text's (without the first step once there are others)."""

    def __init__(self):
        self.start = time.time()
        self.last = time.time()
        self.done = 0  # steps this session
        self.since_lap = 0
        self.first = 0.0  # seconds of the first step

    def step(self):
        self.done += 1
        self.since_lap += 1
        if self.done == 1:
            self.first = time.time() - self.start

    def lap(self):
        seconds = (time.time() - self.last) / self.since_lap
        self.last = time.time()
        self.since_lap = 0
        return seconds

    def eta(self, left):
        return eta_text(time.time() - self.start, self.done, left, self.first)


def progress_text(row, max_iters, dt, tok_s, mfu, eta):
    """A training row's line: '[branch b] iter i/N | loss | lr | ms | tok/s | mfu | elapsed | eta'
    (the mfu where known)."""
    branch = f"[branch {row['branch']}] " if row.get("branch") else ""
    return (
        f"{branch}iter {row['iter']}/{max_iters} | loss {row['loss']:.4f} | lr {row['lr']:.2e} | "
        f"{1000 * dt:.1f} ms | {tok_s:,.0f} tok/s"
        + (f" | mfu {100 * mfu:.1f}%" if mfu else "")
        + f" | {eta}"
    )


def tokens_per_step(cfg):
    """Tokens in one optimizer step of a run (its Config, or config.json's dict)."""
    c = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    return c["batch_size"] * c["block_size"] * c["grad_accum"]


def mean_std(values):
    """(mean, sample standard deviation; 0 for a single value): the seeds tables and error bars."""
    m = sum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))

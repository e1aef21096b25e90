"""The DDP path on CPU (gloo; one process in this one, two spawned): DDP wrapped before compile, the
Ctrl-C flag agreed only at log steps, the process group bound to its GPU, every rank's own RNG
state saved and restored."""

import signal
from contextlib import nullcontext

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import plumbing
import train
from data import load_dataset


def tiny_run(tmp_path, world=1, rank=0, compile=False, **flags):
    """(cfg, proc, data, run): the tiny preset on mqar (nothing on disk), as DDP rank `rank`."""
    flags = {"dataset": "mqar:pairs=4,keys=16", "out_dir": str(tmp_path), **flags}
    cfg = train.Config(**{**train.PRESETS["tiny"], "preset": "tiny", "device": "cpu", **flags})
    proc = plumbing.Process(True, rank, world, "cpu", "float32", nullcontext(), compile)
    data = load_dataset(cfg.dataset, cfg.tokenizer, cfg.data_dir, cfg.block_size)
    return cfg, proc, data, train.Run(cfg, proc, data)


@pytest.fixture
def group(tmp_path):
    """A one-process gloo group for the test."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_ddp_is_wrapped_first_then_compiled(tmp_path, group):
    """compile(DDP(model)), not DDP(compile(model)): DDP's hooks see the compiled backward in
    buckets, so the all-reduce overlaps it; run.raw stays the plain module."""
    _, _, _, run = tiny_run(tmp_path, compile=True)
    assert isinstance(run.model, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(run.ddp, torch.nn.parallel.DistributedDataParallel)
    assert run.model._orig_mod is run.ddp and run.ddp.module is run.raw
    assert isinstance(run.raw, train.GPT)


def test_the_stop_flag_is_synchronised_at_log_steps_only(tmp_path, group, monkeypatch):
    """train() all-reduces (and reads back) at its log steps and evals, never every step."""
    cfg, proc, data, run = tiny_run(
        tmp_path, max_iters=12, log_interval=4, eval_interval=100, ckpt_interval=0
    )
    calls = []
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: calls.append(1) or real(t, *a, **k))
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert train.train(cfg, proc, data, run) is False
    finally:
        signal.signal(signal.SIGINT, handler)
    logged = [r["iter"] for r in plumbing.read_log(tmp_path) if "loss" in r]
    assert logged == [0, 4, 8, 11]
    evals = 2  # at iter 0 and of the finished model (iter 12)
    assert len(calls) == 2 * len(logged) + evals  # per log step: the loss and the stop flag


def test_the_process_group_is_bound_to_this_ranks_gpu(monkeypatch):
    """nccl gets device_id=cuda:<local rank> (torch >= 2.3 takes it); gloo on CPU is unchanged."""
    seen = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.append(kw))

    def proc(device):
        return plumbing.Process(True, 1, 2, device, "bfloat16", nullcontext(), True)

    plumbing.join_process_group(proc("cuda:1"))
    plumbing.join_process_group(proc("cpu"))
    assert seen == [dict(backend="nccl", device_id=torch.device("cuda:1")), dict(backend="gloo")]
    monkeypatch.setattr(plumbing, "BINDS_DEVICE", False)  # a torch without the argument
    plumbing.join_process_group(proc("cuda:1"))
    assert seen[-1] == dict(backend="nccl")


def test_a_checkpoint_of_one_process_resumes_in_any_world():
    """The list of every rank's state, a checkpoint written before it (one dict), and a rank the
    checkpoint lacks (it keeps its own seed, takes the shared batch generator)."""
    one = plumbing.Process(False, 0, 1, "cpu", "float32", nullcontext(), False)
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1)
    states = plumbing.rank_rng_states(one, batch=gen)
    want = torch.rand(3)
    gen_draw = torch.rand(3, generator=gen)
    for saved in (states, states[0]):
        plumbing.restore_rank_rng(saved, one, batch=gen)
        assert torch.equal(torch.rand(3), want)
        assert torch.equal(torch.rand(3, generator=gen), gen_draw)
    rank3 = plumbing.Process(True, 3, 4, "cpu", "float32", nullcontext(), False)
    torch.manual_seed(8)
    own = torch.rand(3)
    torch.manual_seed(8)
    plumbing.restore_rank_rng(states, rank3, batch=gen)
    assert torch.equal(torch.rand(3), own)
    assert torch.equal(torch.rand(3, generator=gen), gen_draw)


def spawn_two(worker, tmp_path):
    """Run worker(rank, tmp_path, results) on two gloo ranks -> the results they left."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(tmp_path, results), nprocs=2)
        return dict(results)


def join(rank, tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=rank, world_size=2
    )


def save_and_restore(rank, tmp_path, results):
    """A rank saves a checkpoint with the other, draws on, restores it: what does it draw?"""
    join(rank, tmp_path)
    torch.manual_seed(100 + rank)  # setup_process's seed + rank: dropout differs per rank
    cfg, proc, data, run = tiny_run(tmp_path, world=2, rank=rank)
    torch.rand(4)
    train.save(cfg, proc, run)  # rank 0 writes ckpt.pt
    after_save = torch.rand(5)  # what this rank draws next
    torch.rand(7)
    dist.barrier()
    run.restore(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    results[rank] = (after_save, torch.rand(5))
    dist.destroy_process_group()


def test_each_rank_restores_its_own_rng_state(tmp_path):
    """--resume under DDP: every rank draws its own dropout masks again, not rank 0's."""
    results = spawn_two(save_and_restore, tmp_path)
    for rank in (0, 1):
        after_save, restored = results[rank]
        assert torch.equal(restored, after_save), f"rank {rank} did not get its own state back"
    assert not torch.equal(results[0][0], results[1][0])  # the ranks' states differ


def ctrl_c_on_rank_1(rank, tmp_path, results):
    """Ctrl-C reaches rank 1 only, at step 5; at which step does each rank stop?"""
    join(rank, tmp_path)
    proc = plumbing.Process(True, rank, 2, "cpu", "float32", nullcontext(), False)
    stop = plumbing.CtrlC(proc)
    for step in range(1, 13):
        if rank == 1 and step == 5:
            stop.ask()
        if stop.pressed(sync=step % 4 == 0):  # log steps: every 4th
            results[rank] = step
            break
    dist.destroy_process_group()


def test_every_rank_stops_at_the_next_log_step_after_a_ctrl_c(tmp_path):
    assert spawn_two(ctrl_c_on_rank_1, tmp_path) == {0: 8, 1: 8}

"""Tests for hsd3_learn.replaybuffer.ReplayBuffer."""

import pytest
import torch

from hsd3_learn.replaybuffer import ReplayBuffer


def make_steps(first_step: int, n_steps: int, n_envs: int) -> dict[str, torch.Tensor]:
    """n_steps env steps of n_envs envs, step-major; every row records its env and step."""
    step = torch.arange(first_step, first_step + n_steps).repeat_interleave(n_envs)
    env = torch.arange(n_envs).repeat(n_steps)
    obs = torch.stack([step.float(), env.float(), (100 * step + env).float()], dim=1)
    return {"obs": obs, "step": step, "env": env, "reward": (step.float() / 10).unsqueeze(1)}


def filled(capacity: int, interleave: int, n_steps: int) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity, interleave)
    for t in range(n_steps):
        buffer.put_row(make_steps(t, 1, interleave))
    return buffer


def test_lazy_init_takes_keys_shapes_dtypes_and_device_from_first_put():
    buffer = ReplayBuffer(8, interleave=2)
    assert len(buffer) == 0 and buffer.keys() == [] and buffer.device is None
    assert buffer.capacity == 8 and buffer.interleave == 2
    buffer.put_row({"obs": torch.zeros(2, 3), "done": torch.tensor([True, False]), "action": torch.ones(2, 1)})
    assert buffer.keys() == ["obs", "done", "action"]
    assert buffer.device == torch.device("cpu") and len(buffer) == 2
    batch = buffer.get_batch(5, generator=torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (5, 3) and batch["obs"].dtype == torch.float32
    assert batch["done"].shape == (5,) and batch["done"].dtype == torch.bool
    assert batch["action"].shape == (5, 1)  # (1,) rows keep their shape


def test_given_device_is_used():
    buffer = ReplayBuffer(4, device="cpu")
    assert buffer.device == torch.device("cpu")
    buffer.put_row({"x": torch.zeros(1, 2, dtype=torch.float64)})
    assert buffer.get_batch_back(1)["x"].dtype == torch.float64


def test_put_row_interleaves_env_i_of_step_t_at_row_t_times_i_plus_i():
    buffer = filled(capacity=12, interleave=3, n_steps=4)
    storage = buffer.state_dict()["storage"]
    for t in range(4):
        for i in range(3):
            assert storage["step"][t * 3 + i] == t and storage["env"][t * 3 + i] == i
    back = buffer.get_batch_back(12)
    assert torch.equal(back["step"], torch.arange(4).repeat_interleave(3))
    assert torch.equal(back["env"], torch.arange(3).repeat(4))


def test_put_of_many_steps_equals_repeated_put_row():
    one_by_one = filled(capacity=10, interleave=2, n_steps=7)
    at_once = ReplayBuffer(10, interleave=2)
    at_once.put(make_steps(0, 3, 2))
    at_once.put(make_steps(3, 4, 2))
    assert len(one_by_one) == len(at_once) == 10
    for key in one_by_one.keys():
        assert torch.equal(one_by_one.get_batch_back(10)[key], at_once.get_batch_back(10)[key])
        assert torch.equal(one_by_one.state_dict()["storage"][key], at_once.state_dict()["storage"][key])


def test_wrap_around_overwrites_the_oldest_rows():
    buffer = filled(capacity=6, interleave=2, n_steps=4)
    assert len(buffer) == 6
    back = buffer.get_batch_back(6)
    assert torch.equal(back["step"], torch.tensor([1, 1, 2, 2, 3, 3]))
    assert buffer.state_dict()["storage"]["step"].tolist() == [3, 3, 1, 1, 2, 2]


def test_put_straddling_the_end_wraps_to_the_front():
    buffer = ReplayBuffer(8, interleave=2)
    buffer.put(make_steps(0, 3, 2))  # rows 0..5
    buffer.put(make_steps(3, 2, 2))  # rows 6, 7, then 0, 1
    assert buffer.state_dict()["storage"]["step"].tolist() == [4, 4, 1, 1, 2, 2, 3, 3]
    assert buffer.get_batch_back(8)["step"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert buffer.get_batch_back(8)["env"].tolist() == [0, 1] * 4


def test_put_larger_than_capacity_keeps_the_newest_rows():
    buffer = ReplayBuffer(4, interleave=2)
    buffer.put(make_steps(0, 1, 2))
    buffer.put(make_steps(1, 5, 2))
    assert len(buffer) == 4
    assert buffer.get_batch_back(4)["step"].tolist() == [4, 4, 5, 5]
    buffer.put_row(make_steps(6, 1, 2))
    assert buffer.get_batch_back(4)["step"].tolist() == [5, 5, 6, 6]


def test_get_batch_is_uniform_over_valid_rows_only():
    buffer = ReplayBuffer(10)
    buffer.put({"id": torch.arange(14)})  # ids 0..3 are overwritten
    ids = buffer.get_batch(20000, generator=torch.Generator().manual_seed(0))["id"]
    assert ids.shape == (20000,)
    assert set(ids.tolist()) == set(range(4, 14))
    frequencies = torch.bincount(ids - 4, minlength=10).float() / ids.numel()
    assert torch.allclose(frequencies, torch.full((10,), 0.1), atol=0.015)


def test_get_batch_is_reproducible_with_a_seeded_generator():
    buffer = filled(capacity=20, interleave=2, n_steps=10)
    first = buffer.get_batch(16, generator=torch.Generator().manual_seed(3))
    second = buffer.get_batch(16, generator=torch.Generator().manual_seed(3))
    other = buffer.get_batch(16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first["obs"], second["obs"])
    assert not torch.equal(first["obs"], other["obs"])


def test_get_batch_where_returns_only_flagged_rows():
    buffer = ReplayBuffer(12, interleave=2)
    data = make_steps(0, 8, 2)  # 16 rows, steps 2..7 remain
    data["start_state"] = (data["step"] % 3 == 0).unsqueeze(1)  # row shape (1,)
    buffer.put(data)
    generator = torch.Generator().manual_seed(0)
    steps = buffer.get_batch_where(500, "start_state", generator=generator)["step"]
    assert set(steps.tolist()) == {3, 6}
    mask = buffer.get_batch_back(12)["env"] == 1
    envs = buffer.get_batch_where(200, mask, generator=generator)["env"]
    assert envs.shape == (200,) and bool((envs == 1).all())


def test_get_batch_where_errors():
    buffer = ReplayBuffer(4)
    buffer.put({"flag": torch.zeros(4, dtype=torch.bool), "x": torch.zeros(4)})
    with pytest.raises(ValueError, match="no valid row"):
        buffer.get_batch_where(3, "flag")
    with pytest.raises(ValueError, match="unknown key"):
        buffer.get_batch_where(3, "missing")
    with pytest.raises(ValueError, match="one bool per row"):
        buffer.get_batch_where(3, "x")
    with pytest.raises(ValueError, match="shape"):
        buffer.get_batch_where(3, torch.ones(5, dtype=torch.bool))


def test_get_trajs_are_consecutive_steps_of_one_env_and_never_cross_the_overwrite_point():
    buffer = filled(capacity=30, interleave=3, n_steps=14)  # steps 4..13 remain, ring start is mid-storage
    trajs = buffer.get_trajs(2000, length=4, generator=torch.Generator().manual_seed(0))
    assert trajs["obs"].shape == (2000, 4, 3) and trajs["step"].shape == (2000, 4)
    assert bool((trajs["env"] == trajs["env"][:, :1]).all())
    assert bool((trajs["step"].diff(dim=1) == 1).all())  # crossing would jump from step 13 back to 4
    assert int(trajs["step"].min()) >= 4 and int(trajs["step"].max()) <= 13
    starts = set(zip(trajs["step"][:, 0].tolist(), trajs["env"][:, 0].tolist()))
    assert starts == {(t, i) for t in range(4, 11) for i in range(3)}


def test_get_trajs_needs_a_full_window():
    buffer = filled(capacity=12, interleave=2, n_steps=3)
    assert bool((buffer.get_trajs(5, length=3)["step"] == torch.tensor([0, 1, 2])).all())
    with pytest.raises(ValueError, match="at least"):
        buffer.get_trajs(1, length=4)
    with pytest.raises(ValueError, match="length"):
        buffer.get_trajs(1, length=0)


def test_get_batch_back_and_pop_front():
    buffer = filled(capacity=8, interleave=2, n_steps=5)  # steps 1..4 remain
    assert buffer.get_batch_back(3)["step"].tolist() == [3, 4, 4]
    buffer.pop_front(2)
    assert len(buffer) == 6
    assert buffer.get_batch_back(6)["step"].tolist() == [2, 2, 3, 3, 4, 4]
    buffer.put_row(make_steps(5, 1, 2))  # fills the freed slots; nothing is overwritten
    assert buffer.get_batch_back(8)["step"].tolist() == [2, 2, 3, 3, 4, 4, 5, 5]
    with pytest.raises(ValueError, match="at least"):
        buffer.get_batch_back(9)
    with pytest.raises(ValueError, match="pop_front"):
        buffer.pop_front(9)


def test_clear_empties_but_keeps_the_schema():
    buffer = filled(capacity=6, interleave=2, n_steps=2)
    buffer.clear()
    assert len(buffer) == 0 and buffer.keys() == ["obs", "step", "env", "reward"]
    with pytest.raises(ValueError, match="buffer has 0"):
        buffer.get_batch(1)
    buffer.put_row(make_steps(7, 1, 2))
    assert buffer.get_batch_back(2)["step"].tolist() == [7, 7]


def test_save_load_round_trip_continues_exactly(tmp_path):
    original = filled(capacity=10, interleave=2, n_steps=7)
    original.pop_front(2)
    path = tmp_path / "sub" / "buffer.pt"
    original.save(path)
    loaded = ReplayBuffer.load(path, device="cpu")
    assert (len(loaded), loaded.capacity, loaded.interleave) == (len(original), 10, 2)
    assert loaded.keys() == original.keys() and loaded.device == torch.device("cpu")
    for buffer in (original, loaded):
        buffer.put(make_steps(7, 3, 2))
    for key in original.keys():
        assert torch.equal(original.state_dict()["storage"][key], loaded.state_dict()["storage"][key])
        assert torch.equal(original.get_batch_back(10)[key], loaded.get_batch_back(10)[key])
    same_a = original.get_batch(8, generator=torch.Generator().manual_seed(1))
    same_b = loaded.get_batch(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(same_a["obs"], same_b["obs"])


def test_load_state_dict_copies_and_checks_configuration():
    source = filled(capacity=6, interleave=2, n_steps=3)
    target = ReplayBuffer(6, interleave=2)
    target.load_state_dict(source.state_dict())
    target.put_row(make_steps(9, 1, 2))  # overwrites the oldest rows of target only
    assert target.get_batch_back(6)["step"].tolist() == [1, 1, 2, 2, 9, 9]
    assert source.get_batch_back(6)["step"].tolist() == [0, 0, 1, 1, 2, 2]  # no shared storage
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(8, interleave=2).load_state_dict(source.state_dict())


def test_constructor_errors():
    with pytest.raises(ValueError, match="multiple of interleave"):
        ReplayBuffer(10, interleave=3)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)
    with pytest.raises(ValueError, match="interleave"):
        ReplayBuffer(4, interleave=0)


def test_put_errors_name_the_key_and_the_mismatch():
    buffer = ReplayBuffer(8, interleave=2)
    buffer.put_row({"obs": torch.zeros(2, 3), "done": torch.zeros(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"'obs' row shape expected \(3,\), got \(4,\)"):
        buffer.put_row({"obs": torch.zeros(2, 4), "done": torch.zeros(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="'done' dtype expected torch.bool, got torch.float32"):
        buffer.put_row({"obs": torch.zeros(2, 3), "done": torch.zeros(2)})
    with pytest.raises(ValueError, match="keys"):
        buffer.put_row({"obs": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="keys"):
        buffer.put_row({"obs": torch.zeros(2, 3), "done": torch.zeros(2, dtype=torch.bool), "x": torch.zeros(2)})
    with pytest.raises(ValueError, match="leading dim interleave=2"):
        buffer.put_row({"obs": torch.zeros(4, 3), "done": torch.zeros(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="multiple of interleave"):
        buffer.put({"obs": torch.zeros(3, 3), "done": torch.zeros(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="rows"):
        buffer.put({"obs": torch.zeros(2, 3), "done": torch.zeros(4, dtype=torch.bool)})
    with pytest.raises(TypeError, match="torch.Tensor"):
        buffer.put({"obs": [[0.0] * 3] * 2, "done": torch.zeros(2, dtype=torch.bool)})
    assert len(buffer) == 2  # nothing was written by the rejected puts


def test_sampling_from_an_empty_buffer_errors():
    buffer = ReplayBuffer(4)
    with pytest.raises(ValueError, match="buffer has 0"):
        buffer.get_batch(1)
    with pytest.raises(ValueError, match="buffer has 0"):
        buffer.get_batch_where(1, "flag")
    with pytest.raises(ValueError, match="buffer has 0"):
        buffer.get_trajs(1, 1)
    with pytest.raises(ValueError, match="buffer has 0"):
        buffer.get_batch_back(1)
    with pytest.raises(ValueError, match="positive int"):
        buffer.get_batch(0)


class IndexSpy(torch.overrides.TorchFunctionMode):
    """Records the number of indices every indexing of a watched tensor reads."""

    def __init__(self, watched: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.names = {id(tensor): name for name, tensor in watched.items()}
        self.reads: list[tuple[str, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__ and id(args[0]) in self.names:
            self.reads.append((self.names[id(args[0])], torch.as_tensor(args[1]).numel()))
        return func(*args, **(kwargs or {}))


def test_get_batch_where_by_key_reads_only_the_flag_column_to_build_the_mask():
    buffer = ReplayBuffer(12, interleave=2)
    data = make_steps(0, 8, 2)  # 16 rows: the ring wraps, 12 valid rows
    data["start_state"] = (data["step"] % 3 == 0).unsqueeze(1)
    buffer.put(data)
    spy = IndexSpy(buffer.state_dict()["storage"])
    with spy:
        steps = buffer.get_batch_where(5, "start_state", generator=torch.Generator().manual_seed(0))["step"]
    assert set(steps.tolist()) <= {3, 6}
    full_reads = [name for name, count in spy.reads if count == len(buffer)]
    assert full_reads == ["start_state"], spy.reads  # the mask: one read of the flag key, over the valid rows
    assert sorted(name for name, count in spy.reads if count == 5) == sorted(buffer.keys())  # the batch


def test_indices_are_drawn_on_the_generator_device_or_the_cpu(monkeypatch):
    draw_devices = []
    real_randint = torch.randint

    def spy_randint(*args, **kwargs):
        draw_devices.append(torch.device(kwargs["device"]))
        return real_randint(*args, **kwargs)

    buffer = filled(capacity=8, interleave=2, n_steps=4)
    flags = torch.ones(len(buffer), dtype=torch.bool)
    monkeypatch.setattr(torch, "randint", spy_randint)
    for generator in (torch.Generator().manual_seed(0), None):
        buffer.get_batch(3, generator=generator)
        buffer.get_batch_where(3, flags, generator=generator)
        buffer.get_trajs(3, length=2, generator=generator)
    assert draw_devices == [torch.device("cpu")] * 6


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_storage_with_a_cpu_generator_samples_the_same_rows_as_cpu_storage():
    data = make_steps(0, 9, 2)
    data["start_state"] = (data["step"] % 2 == 0).unsqueeze(1)
    on_cpu, on_gpu = ReplayBuffer(12, interleave=2), ReplayBuffer(12, interleave=2, device="cuda")
    on_cpu.put(data)
    on_gpu.put(data)
    mask = on_cpu.get_batch_back(12)["env"] == 1
    samplers = [
        lambda buffer, generator: buffer.get_batch(16, generator=generator),
        lambda buffer, generator: buffer.get_batch_where(16, "start_state", generator=generator),
        lambda buffer, generator: buffer.get_batch_where(16, mask, generator=generator),
        lambda buffer, generator: buffer.get_trajs(4, length=3, generator=generator),
    ]
    for sample in samplers:
        expected = sample(on_cpu, torch.Generator().manual_seed(5))
        got = sample(on_gpu, torch.Generator().manual_seed(5))
        for key in on_cpu.keys():
            assert got[key].device.type == "cuda"
            assert torch.equal(got[key].cpu(), expected[key])
    cuda_generator = torch.Generator(device="cuda").manual_seed(0)
    assert on_gpu.get_batch(4, generator=cuda_generator)["obs"].device.type == "cuda"
    assert on_cpu.get_batch(4, generator=cuda_generator)["obs"].device.type == "cpu"


@needs_cuda
def test_save_on_gpu_load_to_cpu(tmp_path):
    on_gpu = ReplayBuffer(10, interleave=2, device="cuda")
    on_gpu.put(make_steps(0, 7, 2))
    path = tmp_path / "buffer.pt"
    on_gpu.save(path)
    on_cpu = ReplayBuffer.load(path, device="cpu")
    assert on_cpu.device == torch.device("cpu") and len(on_cpu) == len(on_gpu)
    for key in on_gpu.keys():
        assert on_cpu.state_dict()["storage"][key].device.type == "cpu"
        assert torch.equal(on_cpu.get_batch_back(10)[key], on_gpu.get_batch_back(10)[key].cpu())
    same_cpu = on_cpu.get_batch(8, generator=torch.Generator().manual_seed(2))
    same_gpu = on_gpu.get_batch(8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(same_cpu["obs"], same_gpu["obs"].cpu())
    assert ReplayBuffer.load(path).device.type == "cuda"  # without a device it returns to where it was saved

"""The GPU benchmark's plumbing on CPU: tower options as row keys, the profile summary."""

from __future__ import annotations

import gzip
import json

import pytest

from experiments import bench_gpu, trace_summary


def _meta(pid, process, threads):
    events = [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": process}}]
    for tid, name in threads.items():
        events.append(
            {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}
        )
    return events


def _x(pid, tid, name, ts, dur):
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": ts, "dur": dur}


def gpu_trace(with_ops_line: bool) -> list[dict]:
    """Two steps on one GPU: a while loop around a gemm and a fusion, a cuDNN kernel, a copy;
    host events that must not count."""
    threads = {1: "Stream #7(Compute)", 2: "XLA Modules"}
    if with_ops_line:
        threads[3] = "XLA Ops"
    events = _meta(10, "/device:GPU:0", threads) + _meta(20, "/host:CPU", {5: "python"})
    for step in range(2):
        t = 1000.0 * step
        kernels = [
            ("sm90_xmma_gemm_bf16bf16", t, 300.0),
            ("loop_add_fusion", t + 300, 100.0),
            ("cudnn_fmha_fwd", t + 400, 50.0),
            ("copy.3", t + 450, 50.0),
        ]
        events += [_x(10, 1, n, ts, d) for n, ts, d in kernels]
        events.append(_x(10, 2, "jit_step", t, 500.0))
        if with_ops_line:
            events.append(_x(10, 3, "while.1", t, 400.0))  # contains the next two
            events.append(_x(10, 3, "custom-call.gemm", t, 300.0))
            events.append(_x(10, 3, "fusion.add", t + 300, 100.0))
            events.append(_x(10, 3, "custom-call.cudnn_attention", t + 400, 50.0))
            events.append(_x(10, 3, "copy.3", t + 450, 50.0))
        events.append(_x(20, 5, "PjitFunction(step)", t, 900.0))
        events.append(_x(10, 1, "Wait for donation holds", t + 500, 400.0))
    return events


@pytest.mark.parametrize("with_ops_line", [True, False])
def test_trace_summary_counts_device_self_time(with_ops_line):
    summary = trace_summary.summarize(gpu_trace(with_ops_line), steps=2)
    assert summary["source"] == ("device ops" if with_ops_line else "device kernels")
    # 500 us of operations per step; the while loop adds no time of its own.
    assert summary["ms_per_step"] == pytest.approx(0.5)
    kinds = {k["kind"]: k["ms_per_step"] for k in summary["by_kind"]}
    assert kinds == pytest.approx(
        {"matmul": 0.3, "other fusion": 0.1, "fused attention": 0.05, "copy / transpose": 0.05}
    )
    assert sum(k["share"] for k in summary["by_kind"]) == pytest.approx(1.0)
    top = summary["top_ops"][0]
    assert top["kind"] == "matmul" and top["calls_per_step"] == 1
    assert top["share"] == pytest.approx(0.6)
    assert "| matmul | 0.30 | 60.0% |" in trace_summary.markdown(summary)
    assert "/host:CPU / python" in summary["lines"]


def test_trace_summary_keeps_overlapping_kernels_whole_and_reports_idle_time():
    """Kernels on one GPU stream that overlap their neighbour by a fraction of a microsecond
    (seen on an H100) are neighbours, not nested: each keeps its duration. The busy time is
    the union of the kernels, the span runs from the first start to the last end."""
    events = _meta(10, "/device:GPU:0", {1: "Stream #14(Compute)"})
    kernels = [
        ("nvjet_sm90_gemm", 0.0, 100.0),
        ("loop_add_fusion", 99.7, 50.0),  # starts 0.3 us before the gemm ends
        ("cutlass_tensorop_bf16_s16816fprop_optimized", 149.5, 20.0),
        ("nvjet_sm90_gemm", 200.0, 100.0),  # after a 30.5 us gap
    ]
    events += [_x(10, 1, n, ts, d) for n, ts, d in kernels]
    summary = trace_summary.summarize(events, steps=1)
    assert summary["ms_per_step"] == pytest.approx(0.27)
    kinds = {k["kind"]: k["ms_per_step"] for k in summary["by_kind"]}
    assert kinds == pytest.approx({"matmul": 0.2, "other fusion": 0.05, "convolution": 0.02})
    assert summary["busy_ms_per_step"] == pytest.approx(0.2695)
    assert summary["span_ms_per_step"] == pytest.approx(0.3)
    assert "busy 0.27 ms per step of a span of 0.30" in trace_summary.markdown(summary)


def test_trace_summary_reads_a_trace_dir_and_checks_steps(tmp_path):
    run = tmp_path / "plugins" / "profile" / "run1"
    run.mkdir(parents=True)
    with gzip.open(run / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": gpu_trace(True)}, f)
    events = trace_summary.load_events(trace_summary.find_trace(tmp_path))
    assert trace_summary.summarize(events)["ms_per_step"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="steps"):
        trace_summary.summarize(events, steps=0)
    with pytest.raises(FileNotFoundError, match="perfetto"):
        trace_summary.find_trace(tmp_path / "plugins" / "nothing")


def test_bench_rows_keep_tower_options_apart_and_profile(tmp_path):
    """Rows with ``--residual bf16`` or ``--mesh`` are measurements of their own (key and
    notes) next to the default row; ``--profile-batches`` leaves a trace and its summary."""
    common = [
        "--preset", "tiny", "--framework", "jax", "--methods", "tent",
        "--modalities", "image", "--batch-sizes", "8", "--galleries", "256",
        "--precisions", "bf16", "--batches", "1", "--distinct-batches", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    bench_gpu.main(common)
    bench_gpu.main([*common, "--residual", "bf16", "--profile-batches", "2"])
    bench_gpu.main([*common, "--mesh"])
    results = json.loads((tmp_path / "bench.json").read_text())
    rows = results["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    assert [run["seeds"] for run in results["runs"]] == [bench_gpu.SEEDS] * 3
    plain, residual, on_mesh = rows
    assert "residual" not in plain and residual["residual"] == "bf16"
    assert on_mesh["mesh"] == 1 and "residual" not in on_mesh
    keys = {bench_gpu.row_key(r) for r in rows}
    assert len(keys) == 3
    assert "residual=bf16" in bench_gpu.notes(residual)
    assert "mesh=1" in bench_gpu.notes(on_mesh)
    assert "profile" not in plain
    assert residual["profile"]["ms_per_step"] > 0
    trace_dir = tmp_path / "profiles" / "image-b8-n256-tent-bf16-bf16"
    assert (trace_dir / "summary.md").read_text().startswith("### image-b8-n256-tent-bf16-bf16")
    assert trace_summary.find_trace(trace_dir).is_file()


def test_markdown_names_the_compilation_caches_of_a_run():
    """Compile times are warm under a cache, so a run's line in bench.md says which it had."""
    run = {"time": "t", "argv": ["--x"], "jax": "0", "xla_flags": "--a=1"}
    warm = bench_gpu.markdown({"runs": [{**run, "compilation_cache_dir": "/c"}], "rows": []})
    assert "xla_flags=`--a=1`, compilation_cache_dir=`/c`" in warm
    cold = bench_gpu.markdown({"runs": [{**run, "xla_flags": ""}], "rows": []})
    assert "xla_flags" not in cold and "compilation_cache_dir" not in cold


BOTH = [
    "--preset", "tiny", "--framework", "both", "--methods", "tcr", "--modalities", "image",
    "--batch-sizes", "8", "--galleries", "256", "--precisions", "fp32", "--batches", "1",
    "--distinct-batches", "1",
]  # fmt: skip


def test_bench_both_runs_the_reference_child_and_rest_jax_in_one_table(tmp_path):
    """``--framework both``: the eager reference in a child process, then rest_jax here; both
    rows end up in one table with their ratio (the child once got ``both`` as a stray
    argument, died, and the run ended with the rest_jax row alone)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    results = bench_gpu.main([*BOTH, "--out", str(tmp_path)])
    rows = {r["framework"]: r for r in results["rows"]}
    assert sorted(rows) == ["jax", "torch"] and len(results["rows"]) == 2
    for row in rows.values():
        assert row["status"] == "ok" and row["queries_per_s"] > 0 and row["cpu_ms_per_batch"] > 0
        assert (row["method"], row["modality"], row["batch_size"]) == ("tcr", "image", 8)
    ratio = bench_gpu.summary_lines(results["rows"])[0]
    assert "tcr rest_jax best (fp32" in ratio and "(CPU time " in ratio
    assert ratio in (tmp_path / "bench.md").read_text()


def test_bench_both_fails_with_the_childs_error(tmp_path, monkeypatch):
    """A torch row that fails in the child fails the whole run, before any rest_jax row; so
    does a missing torch."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if torch.cuda.is_available():
        pytest.skip("tf32 is a valid torch precision on a GPU")
    with pytest.raises(SystemExit, match="child failed.*fp32 only"):
        bench_gpu.main([*BOTH, "--torch-precisions", "tf32", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["framework"], r["status"][:6]) for r in rows] == [("torch", "error:")]
    monkeypatch.setattr(bench_gpu.cli, "torch_available", lambda: "No module named 'torch'")
    with pytest.raises(SystemExit, match="needs torch and transformers"):
        bench_gpu.main([*BOTH, "--out", str(tmp_path / "no_torch")])


def test_world_preset_is_the_default_source_model_and_its_tokens_are_not_special():
    """``--preset world``: the shipped source model's configuration."""
    from rest_jax.data.tokenizer import EOT_ID, SOT_ID
    from rest_jax.pretrained import load_world_source

    world, shipped = bench_gpu.clip_config("world"), load_world_source()
    assert world == shipped.config and world.vision.patch_size == 4
    assert world.text.vocab_size == shipped.tokenizer.vocab_size
    assert (world.text.bos_token_id, world.text.eos_token_id) == (SOT_ID, EOT_ID)
    for cfg in (world, bench_gpu.clip_config("small")):
        ids = bench_gpu.random_token_ids(cfg, 32, seed=0)
        eos = (ids == cfg.text.eos_token_id).argmax(axis=1)
        assert (ids[:, 0] == cfg.text.bos_token_id).all() and (eos >= ids.shape[1] // 2).all()
        assert (ids[:, 1:] != cfg.text.bos_token_id).all()
        assert (ids == cfg.text.eos_token_id).sum() == 32


def test_cpu_profile_takes_each_ops_median_and_groups_by_op_name():
    """experiments/cpu_profile.py: a preempted call (here 10x longer) does not move an op's
    time per batch; ops are grouped by the JAX code their op_name names."""
    from experiments import cpu_profile

    hlo = "\n".join(
        [
            '  %fusion.1 = f32[2] fusion(%a), metadata={op_name="jit(step)/while/body/'
            'closed_call/transpose(jvp(VisionTower))/blocks_0/mlp/fc1/dot_general"}',
            '  ROOT %fusion.2 = f32[2] fusion(%b), metadata={op_name="jit(step)/while/body/'
            'closed_call/jvp(VisionTower)/ln_pre/mul"}',
            '  %custom-call = f32[2] custom-call(%c), metadata={op_name="jit(step)/while/body/'
            'closed_call/jvp()/top_k"}',
            '  %fusion.3 = f32[2] fusion(%d), metadata={op_name="jit(step)/jit(_where)/select_n"}',
        ]
    )
    names = cpu_profile.op_names(hlo)
    assert names["fusion.2"].endswith("ln_pre/mul") and len(names) == 4
    events = _meta(1, "/host:CPU", {7: "tf_XLAEigen/123"})
    for batch in range(3):
        t = 5000.0 * batch
        events.append(_x(1, 7, "fusion.1", t, 1000.0 if batch == 1 else 100.0))
        t += 1000.0  # after fusion.1 also in batch 1: its neighbours, not nested in it
        events += [_x(1, 7, "fusion.2", t + 100, 50.0), _x(1, 7, "custom-call", t + 150, 20.0)]
        events += [_x(1, 7, "fusion.3", t + 170, 10.0), _x(1, 7, "Thunk", t + 180, 5.0)]
    result = cpu_profile.profile_ops(events, names, batches=3)
    groups = {g["group"]: g["ms_per_batch"] for g in result["groups"]}
    assert groups == pytest.approx(
        {
            "tower backward": 0.1,
            "tower forward": 0.05,
            "gallery search (scores, top-K)": 0.02,
            "answer, guards, rollback checks": 0.01,
            "XLA runtime (thunk executor, copies)": 0.005,
        }
    )
    assert result["median_ms_per_batch"] == pytest.approx(0.185)
    assert result["sum_ms_per_batch"] == pytest.approx(0.485)
    assert result["ops"][0]["name"] == "fusion.1" and result["ops"][0]["median_us"] == 100.0

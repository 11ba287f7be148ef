from __future__ import annotations

from pathlib import Path

from kitty.bench._report import docs_page_for, render_page, save


def test_results_in_a_sites_docs_folder_rewrite_its_benchmarks_page(tmp_path: Path) -> None:
    (tmp_path / "mkdocs.yml").write_text("site_name: x\n")
    out = tmp_path / "docs" / "bench"
    assert docs_page_for(out) == (tmp_path / "docs" / "benchmarks.md").resolve()
    suite = {
        "meta": {"date": "d", "size": "smoke", "fleet": "f", "seconds": 1},
        "error": "boom",
    }
    save(out, {"tools": suite}, {"cpus": 2, "memory_gb": 23.5, "python": "3.11"})
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert page.startswith("# Benchmarks\n")
    assert "Generated page" in page
    assert "2 CPU cores, 24 GB of memory" in page
    assert "## Tool calls" in page


def test_results_elsewhere_leave_every_page_alone(tmp_path: Path) -> None:
    assert docs_page_for(tmp_path / "results") is None
    assert docs_page_for(tmp_path / "docs" / "bench") is None  # no mkdocs.yml beside docs/


def test_the_page_leaves_out_timeline_links_of_the_results_folder() -> None:
    dag = {
        "name": "d",
        "shape": "s",
        "tasks": 1,
        "completion_tokens": 1,
        "timeline": "timeline-d.png",
        "best": {
            v: {"ok": True, "wall_s": 1.0} for v in ("sequential", "waves", "product", "oracle")
        },
        "ratio_to_oracle": {v: 1.0 for v in ("sequential", "waves", "product", "oracle")},
    }
    ratios = {v: 1.0 for v in ("sequential", "waves", "product", "oracle")}
    suite = {
        "meta": {"date": "d", "size": "smoke", "fleet": "f", "seconds": 1},
        "reps": 1,
        "token_scale": 1.0,
        "dags": [dag],
        "geomean_ratio_to_oracle": ratios,
        "geomean_span_ratio_to_oracle": ratios,
        "target_product_ratio": 1.05,
        "target_met": True,
        "product_beats_waves": True,
    }
    page = render_page({"suites": {"scheduling": suite}})
    assert "| d | s |" in page
    assert "timeline-d.png" not in page

"""What the command line prints when a command is done: a few lines from its report."""

from __future__ import annotations

from typing import Any

from extmem._defaults import BOOSTER_MODEL_FILE, INCREMENTAL_MODEL_FILE, REPORT_FILE
from extmem._stores import child

MiB = 2**20


def memory_text(report: dict[str, Any]) -> str:
    return f"peak RSS {report['peak_rss_bytes'] / MiB:,.0f} MiB (anonymous {report['peak_anon_bytes'] / MiB:,.0f} MiB)"


def train_summary(report: dict[str, Any], out: str) -> str:
    """A few lines on a finished training run: what was trained, on what, how fast, how well, and where it went."""
    details = report["details"]
    trainer = report["trainer"]
    if trainer == "incremental":
        done = f"{report['algorithm']}: {details['epochs']} epochs"
        storage = f"spool {report['cache_bytes'] / MiB:,.0f} MiB, removed"
    else:
        done = f"{report['rounds']} rounds"
        if trainer == "distributed":
            done += f" on {len(details['workers'])} workers"
            storage = f"per worker; disk caches {report['cache_bytes'] / MiB:,.0f} MiB in all, removed"
        elif report["memory_plan"]["train"]["cache"] == "disk":
            storage = f"disk cache {report['cache_bytes'] / MiB:,.0f} MiB, removed"
        else:
            storage = "matrix held in memory"
    resumed = f", resumed from round {details['resumed_from_round']}" if details.get("resumed_from_round") is not None else ""
    lines = [
        f"trained {done} on {report['rows']:,} rows x {report['features']:,} features in {report['seconds']:.1f} s{resumed}",
        f"{memory_text(report)}; {storage}",
    ]
    stopping = report.get("early_stopping")
    if stopping:
        unit = "epoch" if trainer == "incremental" else "round"
        outcome = (
            f"stopped early; kept {unit} {stopping['best_iteration'] + 1}"
            if stopping["fired"]
            else f"did not fire; best {unit} {stopping['best_iteration'] + 1}"
        )
        lines.append(
            f"early stopping on valid {stopping['metric']} (patience {stopping['rounds']}): {outcome}, {stopping['metric']} {stopping['best_score']:.4f}"
        )
    for data_name, metrics in report["metrics"].items():
        overall = {name: value for name, value in metrics.items() if not name.startswith(("roc_auc_", "pr_auc_"))}
        lines.append(f"{data_name}: " + ", ".join(f"{name} {value:.4f}" for name, value in overall.items()))
        per_class = [
            f"{name} {metrics[f'roc_auc_{name}']:.4f}/{metrics[f'pr_auc_{name}']:.4f}"
            for name in report["classes"] or []
            if f"roc_auc_{name}" in metrics
        ]
        if per_class:
            lines.append(f"{data_name} ROC-AUC/PR-AUC: " + ", ".join(per_class))
    model_file = INCREMENTAL_MODEL_FILE if trainer == "incremental" else BOOSTER_MODEL_FILE
    lines.append(f"model: {child(out, model_file)}; report: {child(out, REPORT_FILE)}")
    return "\n".join(lines)


def evaluation_text(result: dict[str, Any]) -> str:
    shown = {k: v for k, v in result.items() if isinstance(v, float) and k != "seconds"}
    queries = f" in {result['queries']:,} queries" if "queries" in result else ""
    lines = [f"{result['rows']:,} rows{queries}: " + ", ".join(f"{name} {value:.4f}" for name, value in shown.items())]
    per_class = result.get("per_class", {})
    if per_class:
        columns = [c for c in ("precision", "recall", "f1", "roc_auc", "pr_auc", "support") if c in next(iter(per_class.values()))]
        width = max(len(name) for name in per_class) + 2
        lines.append("class".ljust(width) + "".join(c.rjust(11) for c in columns))
        for name, scores in per_class.items():
            cells = "".join(
                ("-" if scores[c] is None else f"{scores[c]:.0f}" if c == "support" else f"{scores[c]:.4f}").rjust(11) for c in columns
            )
            lines.append(name.ljust(width) + cells)
        confusion = result["confusion_matrix"]
        lines.append("confusion matrix (rows: true class, columns: predicted)")
        lines.append("".ljust(width) + "".join(name.rjust(11) for name in confusion["classes"]))
        for name, row in zip(confusion["classes"], confusion["counts"]):
            lines.append(name.ljust(width) + "".join(f"{count:.0f}".rjust(11) for count in row))
    lines.append(f"{memory_text(result)}; {result['seconds']:.1f} s")
    return "\n".join(lines)


def explanation_text(report: dict[str, Any]) -> str:
    """Where the explanations went, and per output its strongest features and k-mer motifs."""
    lines = [
        f"explained {report['rows']:,} rows into {report['out']} ({', '.join(report['files'])}) in {report['seconds']:.1f} s; {memory_text(report)}"
    ]
    for output, features in report["top_features"].items():
        ranked = ", ".join(f"{entry['feature']} {entry['mean_abs_shap']:.3g}" for entry in features)
        lines.append(f"{output}: mean |SHAP| {ranked}")
        motifs = report["motifs"].get(output, [])[:3]
        if motifs:
            lines.append(f"{output}: k-mers holding " + ", ".join(f"{m['motif']} carry {m['enrichment']:.2f}x their share" for m in motifs))
    return "\n".join(lines)


def cv_summary(result: dict[str, Any], out: str | None) -> str:
    """Folds, and each validation metric's mean and standard deviation over them at the end of their runs."""
    groups = f" by {result['group_by']!r}" if result["group_by"] else ""
    rows = ", ".join(f"{fold['valid_rows']:,}" for fold in result["per_fold"])
    shown = [(name, value) for name, value in result["metrics"].items() if value["mean"] is not None][:4]
    metrics = ", ".join(f"{name} {value['mean']:.4f} ± {value['std']:.4f}" for name, value in shown)
    lines = [f"{result['folds']} folds{groups} (validation rows {rows})", f"valid: {metrics}"]
    return "\n".join([*lines, f"results: {out}"] if out else lines)

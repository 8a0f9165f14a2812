"""The main job's report: one self-contained HTML file (figures inlined as PNG) plus the PNGs.

Every number and figure comes from the main job's own results on this run (`results`:
{stage name: figures}); nothing is typed in. Sections whose stage did not run are left out.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import pathlib

from twin_tf.experiments import plots
from twin_tf.experiments.quality import figure, reference_label


def _png(fig) -> bytes:
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  return buffer.getvalue()


def _table(header, rows) -> str:
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                 for row in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def _pm(mean: float, std: float, digits: int = 4) -> str:
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _quality_section(q: dict) -> tuple[str, list]:
  every = {**q["models"], **{f"{n} (baseline)": m for n, m in q.get("baselines", {}).items()}}
  rows = [(n, _pm(m["auc_mean"], m["auc_std"]), _pm(m["gauc_mean"], m["gauc_std"]),
           _pm(m["logloss_mean"], m["logloss_std"]), _pm(m["ndcg_mean"], m["ndcg_std"]),
           _pm(m["recall_mean"], m["recall_std"]),
           _pm(m["diversity_mean"], m["diversity_std"], 3))
          for n, m in every.items()]
  text = (f"<p>Test split of {html.escape(q['dataset'])}; mean ± std over seeds "
          f"{q['seeds']} (dots: single seeds); training: "
          f"{html.escape(str(q['train_config']))}.</p>")
  models = q["models"]
  if "TwinV2" in models and "Twin" in models:
    d_auc = models["TwinV2"]["auc_mean"] - models["Twin"]["auc_mean"]
    d_gauc = models["TwinV2"]["gauc_mean"] - models["Twin"]["gauc_mean"]
    text += (f"<p>TwinV2 − Twin: AUC {d_auc:+.4f}, GAUC {d_gauc:+.4f} (seeds' std: "
             f"TwinV2 {models['TwinV2']['auc_std']:.4f}, Twin {models['Twin']['auc_std']:.4f} "
             "AUC).</p>")
  k = q["random_diversity"]["k"]
  if q.get("baselines"):
    text += ("<p>GBDT (baseline): LightGBM on the same dense statistics the models' top MLP "
             "reads, without any sequence.</p>")
  table = _table(("model", "AUC", "GAUC", "logloss", f"NDCG@{k}", f"recall@{k}",
                  f"distinct categories in top-{k}"), rows)
  references = [(reference_label(n, r), figure(r["auc"]), figure(r["gauc"]))
                for n, r in q.get("references", {}).items() if isinstance(r, dict)]
  if references:
    table += ("<p>References on the same test impressions: single dense features as scores "
              "(the best one chosen on validation) and, for a SYNTHETIC log, its truth.</p>" +
              _table(("reference", "AUC", "GAUC"), references))
  live = [(n, figure(a["target_std"]), figure(a["bias_std"]), figure(a["jaccard"]),
           a["jaccard_users"]) for n, a in (
               (n, m.get("attention")) for n, m in q["models"].items()) if a]
  if live:
    table += ("<p>Liveness of the target attention (twin_tf/training/liveness.py): the std "
              "over a user's clusters of the target term and of the per-cluster term (cross "
              "bias + ln n), and the mean Jaccard index of the GSU's top-K sets between a "
              "user's candidates (1: the same clusters for every candidate).</p>" +
              _table(("model", "target-term std", "per-cluster std", "top-K Jaccard",
                      "users"), live))
  return text + table, [("quality", plots.quality(q), "AUC, GAUC and logloss per model")]



def _activity_section(q: dict) -> tuple[str, list]:
  text = ("<p>Users split into quartiles by the number of behaviors before their clustering "
          "cutoff (the life-cycle the long-term models see). TWIN-V2's gain over TWIN should "
          "grow with this length.</p>")
  models = q["models"]
  if "TwinV2" in models and "Twin" in models:
    gaps = [a["gauc_mean"] - b["gauc_mean"] for a, b in
            zip(models["TwinV2"]["gauc_by_bucket"], models["Twin"]["gauc_by_bucket"])]
    text += "<p>TwinV2 − Twin GAUC per quartile: " + ", ".join(
        f"{g:+.4f}" for g in gaps) + ".</p>"
  return text, [("gauc_by_activity", plots.gauc_by_activity(q), "GAUC per activity quartile")]


def _diversity_section(q: dict) -> tuple[str, list]:
  random = q["random_diversity"]
  text = (f"<p>For each of the {random['users']} users with more than {random['k']} test "
          f"candidates, candidates are ranked by the model's score and the distinct values "
          f"of the feature spec's primary item feature (its category) among the top "
          f"{random['k']} are counted. A random "
          f"ranking gives {random['mean_distinct']:.3f}. The paper reports that TWIN-V2 "
          "recommends more diversely than TWIN.</p>")
  models = q["models"]
  if "TwinV2" in models and "Twin" in models:
    twinv2, twin = models["TwinV2"], models["Twin"]
    text += (f"<p>TwinV2 {_pm(twinv2['diversity_mean'], twinv2['diversity_std'], 3)} against "
             f"Twin {_pm(twin['diversity_mean'], twin['diversity_std'], 3)} distinct "
             "values.</p>")
  return text, [("diversity", plots.diversity(q), "diversity of each user's top-10")]


def _clustering_section(summary: dict, cluster: dict) -> tuple[str, list]:
  p = summary["ratio_percentiles"]
  text = (f"<p>{summary['behaviors']:,} behaviors before the cutoff of {summary['users']} "
          f"users became {summary['clusters']:,} clusters ({summary['overall_ratio']}x), "
          f"largest cluster {summary['max_cluster_size']}; per user p10 {p.get('10')}x, "
          f"median {p.get('50')}x, p90 {p.get('90')}x. Clustering (k-means inside the Beam "
          f"pipeline) took {cluster.get('clustering_ms', 0) / 1000:.1f} s.</p>")
  return text, [("compression", plots.compression(summary), "compression per user")]


def _sweep_section(sweep: dict) -> tuple[str, list]:
  rows = [(p["gamma"], f"{p['clusters']:,}", f"{p['compression']}x", p["max_cluster_size"],
           p["clustering_s"], p["pipeline_s"], f"{p['auc']:.4f}", f"{p['gauc']:.4f}",
           f"{p['logloss']:.4f}") for p in sweep["points"]]
  text = (f"<p>The log clustered again with each gamma, examples rebuilt on the same "
          f"impressions, one {sweep['model']} trained per gamma (seed {sweep['seed']}; one seed, "
          "so differences below the seeds' std in the quality section are noise).</p>")
  table = _table(("gamma", "clusters", "compression", "largest", "clustering s",
                  "pipeline s", "AUC", "GAUC", "logloss"), rows)
  return text + table, [("gamma_sweep", plots.gamma_sweep(sweep), "gamma sweep")]


def _retrieval_section(study: dict) -> tuple[str, list]:
  rows = [(r["keys"], f"{r['clusters']:,}", r["candidates"], r["scann_mode"],
           r["recall_at_100"], r["exact_ms"], r["scann_ms"], f"{r['speedup']}x", r["build_s"])
          for r in study["runs"]]
  text = ("<p>GSU top-100 retrieval for one request. Real keys: every user's cached GSU key "
          "vectors from the served model, pooled into one collection (few users have "
          "enough clusters on their own for ScaNN to pay); queries: the model's query vectors "
          "of distinct test candidates. SYNTHETIC keys: a topic mixture at sizes no public "
          "user reaches.</p>")
  table = _table(("keys", "clusters", "candidates", "ScaNN mode", "recall@100", "exact ms",
                  "ScaNN ms", "speedup", "index build s"), rows)
  return text + table, [("retrieval", plots.retrieval(study), "ScaNN against exact")]


def _serving_section(scored: dict) -> str:
  rows = [(way, f"{scored['auc'][way]:.4f}",
           f"{scored['max_abs_diff_vs_serving_default'].get(way, 0.0):.2e}")
          for way in scored["auc"]]
  return (f"<p>The development server (not TF Serving) served the exported version; user "
          f"{scored['user_id']} ({scored['clusters']} clusters) had {scored['candidates']} test "
          f"candidates scored over gRPC three ways.</p>" +
          _table(("way", "AUC on the user's candidates", "largest |score difference| to "
                  "serving_default"), rows))


def _budget_section(points: list) -> tuple[str, list]:
  text = ("<p>Equal cost: at a sequence budget L the GSU scores L positions. Twin reads the "
          "user's most recent L raw behaviors, TwinV2 at most L clusters covering the whole "
          "pre-cutoff history (a user over L is clustered again with gamma doubled until the "
          "clusters fit), TwinV2-uniform L uniformly sampled raw behaviors. The interval of "
          "TwinV2 − Twin is a 95% paired bootstrap over users (1,000 draws, seeds "
          "averaged).</p>")
  rows = []
  for p in points:
    d = p["twinv2_minus_twin"]
    rows.append([p["budget"], f"{p['clusters']:,}"] + [
        _pm(p["models"][m]["auc_mean"], p["models"][m]["auc_std"]) for m in p["models"]] + [
        f"{d[m]['mean']:+.4f} [{d[m]['ci_low']:+.4f}, {d[m]['ci_high']:+.4f}]"
        for m in ("auc", "gauc")])
  header = (["L", "TwinV2 clusters"] + [f"{m} AUC" for m in points[0]["models"]] +
            ["TwinV2 − Twin AUC", "TwinV2 − Twin GAUC"])
  return text + _table(header, rows), [("budget_sweep", plots.budget_sweep(points),
                                        "AUC and GAUC against the sequence budget L")]


def _variants_section(points: list, what: str) -> tuple[str, list]:
  rows = [(p["variant"], f"{p['clusters']:,}", _pm(p["models"]["TwinV2"]["auc_mean"],
                                                   p["models"]["TwinV2"]["auc_std"]),
           _pm(p["models"]["TwinV2"]["gauc_mean"], p["models"]["TwinV2"]["gauc_std"]))
          for p in points]
  name = what.replace(" ", "_")
  return (_table((what, "clusters", "TwinV2 AUC", "TwinV2 GAUC"), rows),
          [(name, plots.clustering_variants(points, what), f"TwinV2 per {what}")])


def _data_name(quality: dict | None) -> str:
  """The data of a quality summary as the page names it: its dataset or log, and the
  feature spec."""
  if not quality:
    return "its data"
  features = quality.get("features")
  return quality["dataset"] + (f", features {features}" if features else "")


def write_report(results: dict, seconds: dict, out_dir, settings: dict,
                 title: str = "twin-tf main job report") -> dict:
  """Writes out_dir/report.html and out_dir/<figure>.png; returns {"html", "figures"}."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  sections = []
  q = results.get("evaluate")
  if q:
    sections += [("Quality per model", *_quality_section(q)),
                 ("GAUC by user activity", *_activity_section(q))]
    ablation = plots.ablations(q)
    if ablation is not None:
      sections.append(("Ablations: no ln n, uniform sampling instead of clustering",
                       "<p>TwinV2 against itself without the + ln n term and with uniformly "
                       "sampled raw behaviors (as many as the user has clusters) in place of "
                       "the clusters.</p>", [("ablations", ablation, "ablations")]))
    sections.append(("Diversity of the top-10", *_diversity_section(q)))
    if q.get("budget_sweep"):
      sections.append(("TWIN-V2 against TWIN at equal cost", *_budget_section(
          q["budget_sweep"])))
    if q.get("groups_sweep"):
      sections.append(("Number of completion groups M", *_variants_section(
          q["groups_sweep"], "completion groups")))
    if q.get("clustering_method"):
      sections.append(("Clustering method", *_variants_section(
          q["clustering_method"], "clustering method")))
    if q.get("freshness"):
      sections.append(("Cluster freshness: stale, incremental and full re-clustering",
                       *_variants_section(q["freshness"], "cluster freshness")))
  if "cluster-summary" in results:  # the main job's stages from here on
    sections.append(("Clustering compression",
                     *_clustering_section(results["cluster-summary"], results.get("cluster", {}))))
  if "gamma-sweep" in results:
    sections.append(("Gamma sweep", *_sweep_section(results["gamma-sweep"])))
  if "retrieval" in results:
    sections.append(("ScaNN against exact GSU retrieval",
                     *_retrieval_section(results["retrieval"])))
  if "serve-and-score" in results:
    sections.append(("Serving check", _serving_section(results["serve-and-score"]), []))
  if seconds:
    sections.append(("Stages", _table(("stage", "seconds (this run or the run it was kept "
                                       "from)"), [(n, f"{s:.1f}") for n, s in seconds.items()]),
                     []))

  body, written = [], []
  for heading, text, figures in sections:
    body.append(f"<h2>{html.escape(heading)}</h2>{text}")
    for name, fig, alt in figures:
      if fig is None:
        continue
      png = _png(fig)
      (out / f"{name}.png").write_bytes(png)
      written.append(f"{name}.png")
      body.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
                  f'{base64.b64encode(png).decode()}">')
  settings_text = html.escape(", ".join(f"{k}={v}" for k, v in sorted(settings.items())
                                        if k != "command"))
  page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>twin-tf: TWIN-V2 and its baselines on {html.escape(_data_name(q))}</h1>
<p>Written by the main job on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC
from this run's own outputs. Settings: {settings_text}.</p>
{"".join(body)}
</body></html>
"""
  (out / "report.html").write_text(page)
  print(f"report: {out / 'report.html'} ({len(written)} figures)")
  return {"html": str(out / "report.html"), "figures": written}

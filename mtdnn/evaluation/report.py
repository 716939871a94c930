"""One Markdown report from the JSON results of several runs, shaped like the paper's Tab. 2-7.

A run is a folder; every ``*.json`` below it that has a ``kind`` (written by the eval tools:
``lfw``, ``megaface``, ``identification``, ``blufr``, ``attributes``) is one of its results.
A run's paper row is found from its name (the folder name, or ``name``/``model`` in an
optional ``run.json``) through ``mtdnn.paper.MODEL_ROWS``: e.g. ``full`` is the Full-Model (Tab. 2, 3)
and the Full-Block (Tab. 5); ``run.json`` may also give ``{"rows": {"5": "Full-Block"}}``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from mtdnn.paper import MEGAFACE_DISTRACTORS, MODEL_ROWS, TABLE_4, TABLES_2_3, TABLES_5_7
from .roc import tar_text


class ResultConflict(ValueError):
    """A run folder holds two results of one kind (``eval/lfw.json`` and ``eval_old/lfw.json``)."""


def _figure(data: dict) -> str:
    """A result's headline for a message: LFW's accuracy, else nothing."""
    acc, which = _lfw_accuracy(data) if data.get("kind") == "lfw" else (None, "")
    return f" (accuracy {_pct(acc)} %{which})" if acc is not None else ""


def _excluded(path: Path, folder: Path, exclude) -> bool:
    from fnmatch import fnmatch
    rel = path.relative_to(folder).as_posix()
    return any(fnmatch(rel, pat) or fnmatch(rel, pat.rstrip("/") + "/*") for pat in exclude)


def collect_runs(root, exclude=()) -> tuple[list[dict], list[str]]:
    """Runs below ``root``: each sub-folder holding result JSONs (``root`` itself if it holds
    them directly). Returns ``(runs, problems)``: runs are [{name, path, rows, results: {kind:
    dict}, plots: [paths]}]; problems name every JSON file that could not be read (truncated,
    not UTF-8, not JSON, unreadable) with the reason: such a file is never skipped silently.

    The rule for two results of one kind in one run (``eval/lfw.json`` and
    ``eval_old/lfw.json``): none is picked. :class:`ResultConflict` names every candidate
    with its figure; ``exclude`` (glob patterns relative to the run folder, e.g.
    ``eval_old/*`` or ``eval_old``) leaves files out of the search."""
    root = Path(root)
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    runs, problems, clashes = [], [], []

    def read(p: Path):
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problems.append(f"{p}: {type(e).__name__}: {e}")
            return None

    for folder in folders:
        search = folder.glob("*.json") if folder == root else folder.rglob("*.json")
        results, found = {}, {}
        for p in sorted(search):
            if _excluded(p, folder, exclude):
                continue
            data = read(p)
            if isinstance(data, dict) and "kind" in data:
                results[data["kind"]] = data
                found.setdefault(data["kind"], []).append((p, data))
        clashes += [f"{folder}: {k}: " + ", ".join(f"{p.relative_to(folder)}{_figure(d)}" for p, d in c)
                    for k, c in found.items() if len(c) > 1]
        if not results:
            continue
        info = (read(folder / "run.json") or {}) if (folder / "run.json").exists() else {}
        name = info.get("name") or info.get("model") or folder.name
        rows = dict(MODEL_ROWS.get(info.get("model", folder.name), {}))
        rows.update(info.get("rows", {}))
        plots = sorted(p for p in (folder.glob("*.png") if folder == root else folder.rglob("*.png"))
                       if not _excluded(p, folder, exclude))
        runs.append({"name": name, "path": folder, "rows": rows, "results": results, "plots": plots})
    if clashes:
        raise ResultConflict("more than one result of a kind in a run, and none is picked: " + "; ".join(clashes)
                             + ". Move the stale ones out of the run folder, or leave them out with --exclude "
                             "(e.g. --exclude 'eval_old/*')")
    return runs, sorted(set(problems))


def _pct(x, digits=2):
    return "-" if x is None else f"{100 * x:.{digits}f}"


def _lfw_accuracy(lfw: dict) -> tuple:
    """(accuracy, marker): View 2's, else View 1's marked as such, else (None, '')."""
    if "accuracy" in lfw:
        return lfw["accuracy"], ""
    if "view1" in lfw:
        return lfw["view1"]["accuracy"], " (View 1)"
    return None, ""


def _megaface_figures(run):
    """(rank-1, TAR@first FAR as a cell, scale, full) of a run's largest distractor set:
    MegaFace if there, else the stand-in. ``scale`` says it on every row; ``full`` is True
    only for MegaFace at the paper's 1M distractors (only such a figure may stand in bold
    in the paper's columns). A TAR at a FAR below 1/(impostor pairs) is *out of range*."""
    mf = run["results"].get("megaface")
    if mf:
        r = mf["runs"].get("original") or mf["runs"].get("cleaned") or mf["runs"].get("noise_removed")
        last = r["results"][-1]
        full = last["distractors"] >= MEGAFACE_DISTRACTORS
        note = f"MegaFace, {last['distractors']:,} distractors" + ("" if full else " (toy scale)")
    elif "identification" in run["results"]:
        last = run["results"]["identification"]["results"][-1]
        full = False
        note = f"stand-in, {last['distractors']:,} distractors (toy scale)"
    else:
        return None, None, "", False
    tar = tar_text(last["tar_at_far"][0], last.get("n_impostor_pairs")) if last["tar_at_far"] else "-"
    return last["rank1"], tar, note, full


def _attr_scale(run) -> str:
    """The size of a run's attribute evaluation, for its column's head."""
    res = run["results"]["attributes"]
    n = res.get("n_images") or (res.get("attributes") or [{}])[0].get("n")
    return f"{n:,} images" if n else "size unknown"


def _attr_cell(acc) -> str:
    """Accuracy (majority baseline), flagged when the balanced accuracy is <= 50 %."""
    if not acc:
        return "-"
    cell = _pct(acc["accuracy"]) + f" (maj. {_pct(acc['majority_baseline'])})"
    if acc.get("balanced_accuracy") is not None and acc["balanced_accuracy"] <= 0.5:
        cell += f" *chance: bal. acc. {_pct(acc['balanced_accuracy'])}*"
    return cell


def _blufr(bl, part, key) -> str:
    """BLUFR's figure, mean - std, with mean and std (older results without it: mean - std
    from their mean and std)."""
    if not bl:
        return "-"
    v = bl[part]
    figure = v.get(f"{key}_mean_minus_std", v[f"{key}_mean"] - v[f"{key}_std"])
    return f"{_pct(figure)} ({_pct(v[f'{key}_mean'])} ± {_pct(v[f'{key}_std'])})"


def _blufr_people(bl) -> str:
    if not bl:
        return "-"
    if bl.get("standard", True):
        return "all LFW people"
    return f"without {bl['excluded_people']} excluded people"


def _table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def build_report(runs: list[dict], out_dir=None) -> str:
    """The Markdown text; plot links are relative to ``out_dir`` when given."""
    lines = ["# Results", "",
             "Our figures come from the JSON files of each run; paper figures are the paper's "
             "Tab. 2-7. A MegaFace figure marked *stand-in* comes from "
             "`tools/eval_identification.py` (LFW probes vs CelebA distractors), not MegaFace.", ""]
    lines += _megaface_tables(runs) + _attribute_table(runs) + _ablation_tables(runs)
    lines += _lfw_blufr_table(runs) + _per_size_tables(runs) + _plot_list(runs, out_dir)
    return "\n".join(lines)


def _megaface_tables(runs) -> list[str]:
    """Tab. 2 and 3: the paper's methods, then each run's MegaFace (or stand-in) figure."""
    lines = []
    for key, title in (("2", "Tab. 2: MegaFace rank-1 identification, 1M distractors (%)"),
                       ("3", "Tab. 3: MegaFace verification, TAR at FAR 1e-6 (%)")):
        rows = []
        for m, (rel, proto, r1_paper, tar_paper) in TABLES_2_3.items():
            v = r1_paper if key == "2" else tar_paper
            if v is not None:
                rows.append([m, rel, proto, f"{v:.2f}", "paper" + (" (text)" if m.startswith("Google")
                                                                    and key == "3" else "")
                             + f", MegaFace, {MEGAFACE_DISTRACTORS:,} distractors"])
        for run in runs:
            r1, tar, note, full = _megaface_figures(run)
            if r1 is None:
                continue
            label = run["rows"].get("2", run["name"])
            label = f"**ours: {label}**" if full else f"ours: {label}"  # toy scale never in bold
            rows.append([f"{label} ({run['name']})", "yes", "Small", _pct(r1) if key == "2" else tar, note])
        lines += [f"## {title}", "", _table(["Method", "Released", "Protocol", "%", "scale"], rows), ""]
    return lines


def _attribute_table(runs) -> list[str]:
    """Tab. 4: MOON's and the paper's accuracy, then each run's, then the extra columns."""
    att_runs = [r for r in runs if "attributes" in r["results"]]
    head = ["Attribute", "MOON (paper)", "Ours (paper)"] + [
        f"{r['name']} ({_attr_scale(r)}, "
        + ("CelebA: stand-in)" if r["results"]["attributes"].get("stand_in", True) else "hand-labelled FaceScrub)")
        for r in att_runs]
    head += [f"{r['name']}: {x} (extra)" for r in att_runs for x in ("AUC", "acc. at val. threshold")]
    rows = []
    for name, (moon, paper) in TABLE_4.items():
        ours, extra = [], []
        for r in att_runs:
            acc = {a["name"]: a for a in r["results"]["attributes"]["attributes"]}.get(name)
            ours.append(_attr_cell(acc))
            ex = (acc or {}).get("extra") or {}
            vt = (ex.get("val_threshold") or {}).get("accuracy")
            extra += [f"{ex['auc']:.3f}" if ex.get("auc") is not None else "-", _pct(vt)]
        rows.append([name, f"{moon:.2f}", f"{paper:.2f}"] + ours + extra)
    return ["## Tab. 4: attribute prediction accuracy (%)", "",
            "Ours (majority-class baseline in brackets): CelebA's own labels on CelebA images, a "
            "stand-in, unless a column says FaceScrub (tools/eval_attributes.py --facescrub-labels). "
            "The paper's protocol: 1,000 FaceScrub images labelled by three annotators, majority "
            "vote (Sec. 4.3).", "",
            "Our columns use the paper's rule (score > 0 predicts +1). An attribute whose balanced "
            "accuracy is at or below 50 % is flagged *chance*: its accuracy comes from the label balance. "
            "Columns marked *(extra)* are not the paper's figures: the AUC of the scores, and the "
            "accuracy with a threshold chosen on validation data instead of 0.", "", _table(head, rows), ""]


def _ablation_tables(runs) -> list[str]:
    """Tab. 5-7: each paper row with the runs that are it (or dashes)."""
    lines = []
    for key, (title, prow) in TABLES_5_7.items():
        rows = []
        for row, (mf, lfw) in prow.items():
            matched = [r for r in runs if r["rows"].get(key) == row]
            if not matched:
                rows.append([row, f"{mf:.2f}", f"{lfw:.2f}", "-", "-", ""])
            for r in matched:
                r1, _, note, _ = _megaface_figures(r)
                acc, which = _lfw_accuracy(r["results"].get("lfw", {}))
                rows.append([row, f"{mf:.2f}", f"{lfw:.2f}", _pct(r1), _pct(acc) + which,
                             f"{r['name']}" + (f"; {note}" if note else "")])
        lines += [f"## Tab. {key}: {title}", "",
                  _table(["Method", f"MegaFace paper ({MEGAFACE_DISTRACTORS:,} distractors)", "LFW paper (View 2)",
                          "MegaFace ours", "LFW ours", "run; scale"], rows), ""]
    return lines


def _lfw_blufr_table(runs) -> list[str]:
    """LFW and BLUFR of every run that has either (nothing when none has)."""
    rows = []
    for r in runs:
        lfw, bl = r["results"].get("lfw"), r["results"].get("blufr")
        if not lfw and not bl:
            continue
        tar = lfw["tar_at_far"][0] if lfw and lfw.get("tar_at_far") else None
        rows.append([r["name"],
                     f"{_pct(lfw['accuracy'])} ± {_pct(lfw['std'])}" if lfw and "accuracy" in lfw else "-",
                     lfw["rule"] if lfw else "-",
                     _pct(lfw["view1"]["accuracy"]) if lfw and "view1" in lfw else "-",
                     f"{tar_text(tar)} @ {tar['far']:g}" if tar else "-",
                     str(lfw["n_missing_pairs"]) if lfw and "n_missing_pairs" in lfw else "-",
                     _blufr(bl, "verification", "tar"), _blufr(bl, "open_set", "dir"), _blufr_people(bl)])
    if not rows:
        return []
    return ["## LFW and BLUFR", "",
            "BLUFR figures are mean − std over its 10 trials (BLUFR's own figure; mean and std in "
            "brackets). BLUFR's test sets hold nearly all of LFW: a figure on *all LFW people* is "
            "valid only for a model trained on none of them (e.g. on CASIA-WebFace); a model "
            "trained on LFW people is evaluated without them (`tools/eval_blufr.py --exclude`).", "",
            _table(["run", "LFW View 2 (%)", "rule", "View 1 (%)", "TAR (%)", "missing pairs",
                    "BLUFR VR @ 0.1% FAR", "BLUFR DIR @ 1% FAR, rank 1", "BLUFR people"], rows), ""]


def _per_size_tables(runs) -> list[str]:
    """MegaFace / stand-in figures of every run at every distractor set size."""
    lines = []
    for r in runs:
        for kind in ("megaface", "identification"):
            res = r["results"].get(kind)
            if not res:
                continue
            sets = res["runs"] if kind == "megaface" else {"stand-in": res}
            for tag, rr in sets.items():
                rows = [[f"{s['distractors']:,}", _pct(s["rank1"])] +
                        [tar_text(t, s.get("n_impostor_pairs")) for t in s["tar_at_far"]] for s in rr["results"]]
                fars = [f"TAR @ {t['far']:g} ({t['rule']})" for t in rr["results"][0]["tar_at_far"]]
                lines += [f"### {r['name']}: {kind} ({tag}), {rr['n_probes']} probes of "
                          f"{rr['n_identities']} identities", "",
                          _table(["distractors", "rank-1 (%)"] + fars, rows), ""]
    return lines


def _plot_list(runs, out_dir) -> list[str]:
    """Links to every run's plots, relative to ``out_dir`` when given."""
    plot_lines = []
    for r in runs:
        for p in r["plots"]:
            link = os.path.relpath(p, out_dir) if out_dir else str(p)
            plot_lines.append(f"- {r['name']}: [{p.name}]({link})")
    return ["## Plots", ""] + plot_lines + [""] if plot_lines else []

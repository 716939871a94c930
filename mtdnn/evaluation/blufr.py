"""BLUFR on LFW (Liao, Lei, Yi and Li, IJCB 2014), following its MATLAB code.

The config ``blufr_lfw_config.mat`` holds ``imageList`` (13,233 file names), ``labels``,
and per trial (10) the 1-based index sets ``testIndex`` (= gallery + probes),
``galIndex`` and ``probIndex`` (plus ``trainIndex`` for methods that learn a metric).

Per trial, on the L2-normalised features (score = cosine):

* verification (``EvalROC``): all pairs of distinct test images, genuine when their labels
  agree; threshold = the round(FAR * n_impostor)-th highest impostor score, verification
  rate = fraction of genuine scores >= it.
* open-set identification (``OpenSetROC``): gallery x probe scores; probes whose identity
  is in the gallery are genuine probes, the others impostor probes whose detection score is
  their highest gallery score; threshold = the round(FAR * n_impostor_probes)-th highest of
  those; a genuine probe counts at rank r when its best mate score is >= the threshold and
  the mate is within the first r of the gallery sorted by score (stable sort: a tie with a
  lower gallery index ranks first, like MATLAB's ``sort``).
* FAR = 0: threshold halfway between the highest impostor and the lowest genuine score
  above it (or just above the highest impostor), as in the MATLAB code.

Scores are computed in float64 from the float32 features, like the MATLAB reference (a
float32 score moves about one genuine pair per trial, ~5e-4 points).

Reported: BLUFR's headline figure mean - std over the trials (its readme asks for it; std is
MATLAB's, ddof=1), with the mean and the std beside it.

``exclude_people``: the images of these people (LFW names, e.g. a model's training people) are
left out of every trial's test, gallery and probe sets. BLUFR's test sets hold almost all of
LFW, so a model trained on LFW people is otherwise scored on pairs of its own training
identities; the result then says ``"standard": False`` and how many people and images were
left out: it is a figure on unseen people, not the standard BLUFR one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .features_io import check_features, image_key, lookup, name_index
from .lfw import lfw_person
from .roc import matlab_round

VERI_FAR_POINTS = np.r_[0, np.kron(10.0 ** np.arange(-8, 0), np.arange(1, 10)), 1]
OSI_FAR_POINTS = np.r_[0, np.kron(10.0 ** np.arange(-4, 0), np.arange(1, 10)), 1]
RANK_POINTS = np.r_[np.arange(1, 11), np.arange(20, 101, 10)]


def load_blufr_config(path) -> dict:
    """The .mat config as Python: ``image_names`` (list), ``labels`` (int array) and
    ``trials``: list of {"train", "test", "gallery", "probe"} 0-based index arrays."""
    from scipy.io import loadmat
    m = loadmat(str(path))
    for key in ("imageList", "labels", "testIndex", "galIndex", "probIndex"):
        if key not in m:
            raise ValueError(f"{path}: no variable {key!r} (found {sorted(k for k in m if not k.startswith('__'))})")
    names = [str(np.asarray(c).ravel()[0]) for c in m["imageList"].ravel()]
    name_index(names, f"{path} imageList")  # one image twice: two rows of one image
    labels = np.asarray(m["labels"]).ravel().astype(np.int64)
    cells = {k: [np.asarray(c).ravel().astype(np.int64) - 1 for c in m[k].ravel()]
             for k in ("trainIndex", "testIndex", "galIndex", "probIndex") if k in m}
    n_trials = len(cells["testIndex"])
    trials = []
    for t in range(n_trials):
        tr = {"test": cells["testIndex"][t], "gallery": cells["galIndex"][t],
              "probe": cells["probIndex"][t]}
        if "trainIndex" in cells:
            tr["train"] = cells["trainIndex"][t]
        for k, v in tr.items():
            if v.size and (v.min() < 0 or v.max() >= len(names)):
                raise ValueError(f"{path}: trial {t + 1} {k} index out of range")
            if np.unique(v).size != v.size:  # an image paired with itself: a sure genuine match
                raise ValueError(f"{path}: trial {t + 1} {k} lists image {names[_first_repeat(v)]} twice")
        if np.intersect1d(tr["gallery"], tr["probe"]).size:  # a probe that finds itself in the gallery
            raise ValueError(f"{path}: trial {t + 1}: image {names[np.intersect1d(tr['gallery'], tr['probe'])[0]]} "
                             f"is both in the gallery and a probe")
        trials.append(tr)
    return {"image_names": names, "labels": labels, "trials": trials}


def _first_repeat(v) -> int:
    seen = set()
    for i in v.tolist():
        if i in seen:
            return i
        seen.add(i)
    raise ValueError("no repeated index")


def _thresholds(imp_desc, gen, far_points):
    """BLUFR's thresholds from descending impostor scores (see the module doc)."""
    n_imp = imp_desc.size
    fa = np.array([matlab_round(f * n_imp) for f in far_points])
    thr = np.empty(len(fa))
    mid = (fa > 0) & (fa < n_imp)
    thr[mid] = imp_desc[fa[mid] - 1]
    top, bottom = float(imp_desc[0]), float(imp_desc[-1])  # float64: eps must not vanish
    high = gen[gen > top]
    thr[fa == 0] = (top + high.min()) / 2 if high.size else top + np.finfo(float).eps
    thr[fa == n_imp] = min(bottom, float(gen.min())) - np.sqrt(np.finfo(float).eps)
    return thr, fa / n_imp


def roc_from_scores(genuine, impostor, far_points=VERI_FAR_POINTS):
    """BLUFR ``EvalROC`` from genuine and impostor scores: ``(vr, far)`` at ``far_points``."""
    imp = np.array(impostor, dtype=np.float64).ravel()  # an own copy, sorted in place
    imp.sort()
    imp = imp[::-1]
    gen = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    thr, far = _thresholds(imp, gen, far_points)
    vr = (gen.size - np.searchsorted(gen, thr, "left")) / gen.size
    return vr, far


def eval_roc(score, labels, far_points=VERI_FAR_POINTS):
    """BLUFR ``EvalROC`` over all pairs of distinct images of a square score matrix.

    Returns ``(vr, far)`` at ``far_points``."""
    labels = np.asarray(labels)
    iu, ju = np.triu_indices(len(labels), 1)
    same = labels[iu] == labels[ju]
    return roc_from_scores(score[iu[same], ju[same]], score[iu[~same], ju[~same]], far_points)


def pair_scores(x, labels, block: int = 1024):
    """Cosine scores of all pairs of distinct rows of unit-norm ``x``, split into genuine
    (same label) and impostor, computed in float64 by row blocks so that neither the N x N
    matrix nor its masks are ever held (10k test images: 50M impostor scores, 400 MB)."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(labels)
    _, inv, count = np.unique(labels, return_inverse=True, return_counts=True)
    n_gen = int(np.sum(count * (count - 1) // 2))
    imp = np.empty(n * (n - 1) // 2 - n_gen, dtype=np.float64)
    gen = np.empty(n_gen, dtype=np.float64)
    gi = ii = 0
    cols = np.arange(n)
    for a in range(0, n, block):
        b = min(a + block, n)
        s = x[a:b] @ x.T
        upper = cols[None, :] > np.arange(a, b)[:, None]
        same = inv[a:b, None] == inv[None, :]
        g, im = s[upper & same], s[upper & ~same]
        gen[gi:gi + g.size], imp[ii:ii + im.size] = g, im
        gi, ii = gi + g.size, ii + im.size
    return gen, imp


def open_set_roc(score, gal_labels, probe_labels, far_points=OSI_FAR_POINTS,
                 rank_points=RANK_POINTS):
    """BLUFR ``OpenSetROC``: ``score`` is gallery x probe. Returns ``(dir, far)``, ``dir`` of
    shape (len(rank_points), len(far_points))."""
    gal_labels = np.asarray(gal_labels)
    probe_labels = np.asarray(probe_labels)
    match = gal_labels[:, None] == probe_labels[None, :]
    is_gen = match.any(axis=0)
    if not is_gen.any() or is_gen.all():
        raise ValueError("open-set identification needs genuine and impostor probes")
    imp = np.sort(score[:, ~is_gen].max(axis=0))[::-1].astype(np.float64)
    s = score[:, is_gen]
    m = match[:, is_gen]
    masked = np.where(m, s, -np.inf)
    mate = masked.argmax(axis=0)                     # first best mate, like MATLAB's max
    cols = np.arange(s.shape[1])
    gen = s[mate, cols].astype(np.float64)
    # stable descending order: ahead of the mate are higher scores and equal ones earlier
    higher = (s > gen[None, :]).sum(axis=0)
    tie_before = ((s == gen[None, :]) & (np.arange(s.shape[0])[:, None] < mate[None, :])).sum(axis=0)
    rank = 1 + higher + tie_before
    thr, far = _thresholds(imp, gen, far_points)
    detected = gen[:, None] >= thr[None, :]
    within = rank[:, None] <= np.asarray(rank_points)[None, :]
    dir_ = (within[:, :, None] & detected[:, None, :]).mean(axis=0)
    return dir_, far


def far_point_index(points, far: float):
    """``(points, index)``: the index of ``far`` among the FAR ``points`` (relative tolerance
    1e-9, no absolute one: FARs go down to 1e-8, where numpy's default absolute tolerance of
    1e-8 would take 9e-8 for 1e-7), or the points with ``far`` appended and its index."""
    points = np.asarray(points, dtype=np.float64)
    hit = np.flatnonzero(np.isclose(points, far, rtol=1e-9, atol=0.0))
    if hit.size:
        return points, int(hit[0])
    return np.r_[points, far], len(points)


def exclude_from_trials(cfg: dict, people) -> tuple[list[dict], int, int]:
    """The config's trials without the images of ``people``: ``(trials, n_people, n_images)``,
    counting the people and images of the config that were left out."""
    people = set(people)
    out = np.array([lfw_person(n) in people for n in cfg["image_names"]])
    trials = []
    for t, tr in enumerate(cfg["trials"]):
        kept = {k: v[~out[v]] for k, v in tr.items()}
        if kept["test"].size < 2 or kept["gallery"].size == 0 or kept["probe"].size == 0:
            raise ValueError(f"BLUFR trial {t + 1}: too few images left after excluding {len(people)} people")
        trials.append(kept)
    n_people = len({lfw_person(n) for n, o in zip(cfg["image_names"], out) if o})
    return trials, n_people, int(out.sum())


def _summary(per_trial, key: str) -> dict:
    """mean, std (MATLAB's, ddof=1; 0 for one trial) and BLUFR's figure mean - std."""
    a = np.asarray(per_trial, dtype=np.float64)
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {f"{key}_mean_minus_std": float(a.mean()) - std, f"{key}_mean": float(a.mean()),
            f"{key}_std": std, f"{key}_per_trial": a.tolist()}


def evaluate_blufr(features, names, config, *, veri_far=1e-3, osi_far=1e-2, rank=1,
                   exclude_people=(), progress=True) -> dict:
    """BLUFR over all trials of ``config`` (a path or ``load_blufr_config``'s dict).

    The config's images are found among ``names`` by file name without extension; every one
    must have a feature (ValueError naming those that do not). ``exclude_people``: see the
    module doc. The reported figures (``tar``, ``dir``) are mean - std over the trials.
    """
    from tqdm import tqdm
    cfg = load_blufr_config(config) if isinstance(config, (str, Path)) else config
    rows = lookup(name_index(names, "feature names"),
                  [image_key(n) for n in cfg["image_names"]], "BLUFR images among the features")
    x = check_features(np.asarray(features)[rows], "BLUFR features").astype(np.float64)
    feats = x / np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    labels = cfg["labels"]
    trials, n_people, n_images = cfg["trials"], 0, 0
    if exclude_people:
        trials, n_people, n_images = exclude_from_trials(cfg, exclude_people)
    veri_points, vi = far_point_index(VERI_FAR_POINTS, veri_far)
    osi_points, oi = far_point_index(OSI_FAR_POINTS, osi_far)
    ri_mask = RANK_POINTS == rank
    rank_points = RANK_POINTS if ri_mask.any() else np.r_[RANK_POINTS, rank]
    ri = int(np.flatnonzero(ri_mask)[0]) if ri_mask.any() else len(rank_points) - 1
    vrs, dirs, vfars, ofars = [], [], [], []
    for tr in tqdm(trials, desc="BLUFR trials", disable=not progress):
        vr, vfar = roc_from_scores(*pair_scores(feats[tr["test"]], labels[tr["test"]]), veri_points)
        d, ofar = open_set_roc(feats[tr["gallery"]] @ feats[tr["probe"]].T, labels[tr["gallery"]],
                               labels[tr["probe"]], osi_points, rank_points)
        vrs.append(vr), dirs.append(d), vfars.append(vfar), ofars.append(ofar)
    vrs, dirs = np.array(vrs), np.array(dirs)
    standard = not exclude_people
    protocol = "BLUFR on LFW (Liao et al. 2014), %d trials" % len(trials)
    if not standard:
        protocol += (f", without the images of {n_people} excluded people ({n_images} images): "
                     "a figure on people outside the excluded list, not the standard BLUFR figure")
    return {
        "kind": "blufr", "protocol": protocol, "standard": standard,
        "excluded_people": n_people, "excluded_images": n_images,
        "score": "cosine of L2-normalised features, float64",
        "reported": "mean - std over the trials (BLUFR's figure)",
        "n_trials": len(trials),
        "verification": {"far": veri_far, **_summary(vrs[:, vi], "tar"),
                         "roc": {"far": np.mean(vfars, axis=0).tolist(),
                                 "tar": vrs.mean(axis=0).tolist()}},
        "open_set": {"far": osi_far, "rank": rank, **_summary(dirs[:, ri, oi], "dir"),
                     "roc": {"far": np.mean(ofars, axis=0).tolist(),
                             "dir": dirs[:, ri, :].mean(axis=0).tolist()}},
    }

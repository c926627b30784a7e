"""Tests of the challenge metric: hand-computed cases, sklearn agreement, missing patients, real labels."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so plain `pytest` works as well as `python -m pytest`
    sys.path.insert(0, str(ROOT))

from sklearn import metrics as skm  # noqa: E402

from evaluation.metrics import (  # noqa: E402
    MACRO_CLASS_SET, MISSING, TASK_WEIGHTS, ScoreReport, accuracy, bootstrap_interval, challenge_score,
    confusion_matrix,
    macro_classes, macro_f1, precision_recall_f1, unpredicted_counts,
)
from study.challenge import PatientLabels, read_labels  # noqa: E402
from study.levels import ALIGNMENT_SCORED_CLASS, CANAL_POSITIONS, DISCS  # noqa: E402

TRAIN_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "cervai" / "train_labels.json"


def P(pid, curv, align, disc, canal) -> PatientLabels:
    return PatientLabels(pid, curv, align, tuple(disc), tuple(canal))


# The 3-patient example, truth and prediction:
#   curvature  truth [0, 1, 2]  pred [0, 1, 1]
#   alignment  truth [0, 1, 0]  pred [0, 0, 1]
#   disc       truth P1 00000 P2 11111 P3 22223;  pred P1 00000 P2 11110 P3 22222
#   canal      truth P1 all 0, P2 all 1, P3 all 2;  pred P1 all 0, P2 all 1, P3 all 1
TRUTH3 = [
    P("P1", 0, 0, [0, 0, 0, 0, 0], [0] * 11),
    P("P2", 1, 1, [1, 1, 1, 1, 1], [1] * 11),
    P("P3", 2, 0, [2, 2, 2, 2, 3], [2] * 11),
]
PRED3 = [
    P("P1", 0, 0, [0, 0, 0, 0, 0], [0] * 11),
    P("P2", 1, 0, [1, 1, 1, 1, 0], [1] * 11),
    P("P3", 1, 1, [2, 2, 2, 2, 2], [1] * 11),
]
# curvature: F1 = 2tp/(2tp+fp+fn). c0: 2/2 = 1; c1: tp1 fp1 -> 2/3; c2: tp0 fn1 -> 0. Macro over
#   {0,1,2}: (1 + 2/3 + 0)/3 = 5/9.
CURV3 = 5 / 9
# alignment, class 0 only: tp1 (P1) fp1 (P2) fn1 (P3) -> 2/(2+1+1) = 1/2.
ALIGN3 = 1 / 2
# disc, 15 pooled items: c0 tp5 fp1 -> 10/11; c1 tp4 fn1 -> 8/9; c2 tp4 fp1 -> 8/9; c3 fn1 -> 0.
#   Macro over {0,1,2,3}: (10/11 + 8/9 + 8/9 + 0)/4 = (90 + 88 + 88)/99/4 = 266/396.
DISC3 = 266 / 396
# canal, 33 pooled items: c0 11/11 -> 1; c1 tp11 fp11 -> 22/33 = 2/3; c2 fn11 -> 0. Macro 5/9.
CANAL3 = 5 / 9
SCORE3 = 0.2 * CURV3 + 0.2 * ALIGN3 + 0.3 * DISC3 + 0.3 * CANAL3  # = 0.579293...


# ----------------------------------------------------------------------------------------------
# Elementary metrics, by hand
# ----------------------------------------------------------------------------------------------

def test_confusion_matrix_by_hand():
    cm = confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], 3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_missing_predictions_are_outside_the_confusion_matrix_but_counted():
    t, p = [0, 1, 1, 2], [0, MISSING, 1, MISSING]
    assert confusion_matrix(t, p, 3).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert unpredicted_counts(t, p, 3).tolist() == [0, 1, 1]


def test_precision_recall_f1_by_hand():
    # truth [0,0,1,1,2], pred [0,1,1,1,1]: c0 tp1 fn1 -> P 1, R 1/2, F1 2/3;
    # c1 tp2 fp2 -> P 1/2, R 1, F1 4/6; c2 fn1 -> 0, 0, 0.
    prec, rec, f1 = precision_recall_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 1], 3)
    assert prec == pytest.approx([1, 0.5, 0])
    assert rec == pytest.approx([0.5, 1, 0])
    assert f1 == pytest.approx([2 / 3, 2 / 3, 0])


def test_macro_class_set_union_vs_all():
    # Classes 0 and 1 only, perfectly predicted, of 4: union averages over {0,1} -> 1.0;
    # "all" also counts the absent classes 2 and 3 as F1 0 -> 0.5.
    t = p = [0, 1, 1, 0]
    assert MACRO_CLASS_SET == "union"
    assert macro_classes(t, p, 4) == (0, 1)
    assert macro_f1(t, p, 4) == 1.0
    assert macro_f1(t, p, 4, class_set="all") == 0.5
    with pytest.raises(ValueError):
        macro_f1(t, p, 4, class_set="present")


def test_a_class_only_predicted_is_in_the_union():
    # truth [0,0], pred [0,1]: c0 tp1 fn1 -> 2/3; c1 fp1 -> 0. Union {0,1} -> 1/3.
    assert macro_f1([0, 0], [0, 1], 3) == pytest.approx(1 / 3)


def test_missing_is_never_a_macro_class():
    # truth [0,1], pred [0,MISSING]: c0 F1 1; c1 fn1 -> 0. Classes {0,1} -> 1/2 (not 1/3).
    assert macro_classes([0, 1], [0, MISSING], 3) == (0, 1)
    assert macro_f1([0, 1], [0, MISSING], 3) == pytest.approx(0.5)
    assert accuracy([0, 1], [0, MISSING]) == 0.5


def test_empty_and_invalid_inputs():
    assert macro_f1([], [], 3) == 0.0
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0, -2], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)


# ----------------------------------------------------------------------------------------------
# Agreement with sklearn
# ----------------------------------------------------------------------------------------------

def test_agrees_with_sklearn_on_random_data():
    rng = np.random.default_rng(1234)
    for _ in range(300):
        n = int(rng.integers(2, 5))
        m = int(rng.integers(1, 40))
        # Draw from a random subset of classes so some are absent from truth and/or prediction.
        t = rng.choice(rng.choice(n, size=rng.integers(1, n + 1), replace=False), size=m)
        p = rng.choice(rng.choice(n, size=rng.integers(1, n + 1), replace=False), size=m)
        assert macro_f1(t, p, n) == pytest.approx(
            skm.f1_score(t, p, average="macro", zero_division=0), abs=1e-12)
        assert macro_f1(t, p, n, class_set="all") == pytest.approx(
            skm.f1_score(t, p, labels=list(range(n)), average="macro", zero_division=0), abs=1e-12)
        prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, labels=list(range(n)), zero_division=0)
        ours = precision_recall_f1(t, p, n)
        np.testing.assert_allclose(ours[0], prec, atol=1e-12)
        np.testing.assert_allclose(ours[1], rec, atol=1e-12)
        np.testing.assert_allclose(ours[2], f1, atol=1e-12)
        np.testing.assert_array_equal(confusion_matrix(t, p, n),
                                      skm.confusion_matrix(t, p, labels=list(range(n))))
        assert accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p))


def test_agrees_with_sklearn_with_missing_predictions():
    # With MISSING in y_pred, ours equals sklearn restricted to the real classes in the union:
    # MISSING then acts as a label that is never averaged, i.e. a pure false negative.
    rng = np.random.default_rng(99)
    for _ in range(200):
        n = int(rng.integers(2, 5))
        m = int(rng.integers(1, 30))
        t = rng.integers(0, n, m)
        p = np.where(rng.random(m) < 0.3, MISSING, rng.integers(0, n, m))
        labels = sorted(set(t.tolist()) | set(p[p != MISSING].tolist()))
        assert macro_f1(t, p, n) == pytest.approx(
            skm.f1_score(t, p, labels=labels, average="macro", zero_division=0), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# The challenge score
# ----------------------------------------------------------------------------------------------

def test_three_patient_example_by_hand():
    r = challenge_score(TRUTH3, PRED3)
    assert isinstance(r, ScoreReport)
    assert r.curvature.value == pytest.approx(CURV3)
    assert r.alignment.value == pytest.approx(ALIGN3)
    assert r.disc.value == pytest.approx(DISC3)
    assert r.canal.value == pytest.approx(CANAL3)
    assert r.score == pytest.approx(SCORE3)
    assert r.score == pytest.approx(0.579293, abs=1e-6)
    assert [t.task for t in r.tasks] == list(TASK_WEIGHTS)
    assert sum(t.weight for t in r.tasks) == pytest.approx(1.0)
    assert r.n_patients == 3 and r.missing_ids == () and r.extra_ids == ()
    assert (r.disc.n_items, r.canal.n_items) == (15, 33)
    assert r.curvature.confusion == ((1, 0, 0), (0, 1, 0), (0, 1, 0))


def test_three_patient_per_level_tables():
    r = challenge_score(TRUTH3, PRED3)
    assert [lv.level for lv in r.disc_levels] == list(DISCS)
    assert [lv.level for lv in r.canal_levels] == list(CANAL_POSITIONS)
    # C2-3: truth [0,1,2] pred [0,1,2] -> perfect.
    assert (r.disc_levels[0].macro_f1, r.disc_levels[0].accuracy) == (1.0, 1.0)
    # C6-7: truth [0,1,3] pred [0,0,2]: c0 tp1 fp1 -> 2/3; c1, c2, c3 -> 0. Union {0,1,2,3} -> 1/6.
    assert r.disc_levels[4].macro_f1 == pytest.approx(1 / 6)
    assert r.disc_levels[4].accuracy == pytest.approx(1 / 3)
    # Every canal position: truth [0,1,2] pred [0,1,1] -> same as curvature, 5/9, accuracy 2/3.
    for lv in r.canal_levels:
        assert lv.macro_f1 == pytest.approx(5 / 9) and lv.accuracy == pytest.approx(2 / 3) and lv.n_items == 3


def test_three_patient_pku_table():
    r = challenge_score(TRUTH3, PRED3)
    c1, c2 = r.curvature.per_class[1], r.curvature.per_class[2]
    # Curvature class 1: tp1 (P2) fp1 (P3) fn0 tn1 (P1).
    assert (c1.support, c1.tp, c1.fp, c1.fn, c1.tn) == (1, 1, 1, 0, 1)
    assert (c1.sensitivity, c1.specificity, c1.ppv, c1.npv) == pytest.approx((1, 0.5, 0.5, 1))
    assert c1.accuracy == pytest.approx(2 / 3) and c1.f1 == pytest.approx(2 / 3)
    # Class 2: tp0 fp0 fn1 tn2; PPV is 0/0 -> 0 (zero_division=0).
    assert (c2.support, c2.tp, c2.fp, c2.fn, c2.tn) == (1, 0, 0, 1, 2)
    assert (c2.sensitivity, c2.specificity, c2.ppv, c2.npv) == pytest.approx((0, 1, 0, 2 / 3))
    assert [c.name for c in r.canal.per_class][0] == "none"
    # Disc class 3 (extrusion): one item, never predicted, 14 true negatives.
    d3 = r.disc.per_class[3]
    assert (d3.support, d3.tp, d3.fn, d3.tn) == (1, 0, 1, 14)


def test_perfect_predictions_score_one():
    r = challenge_score(TRUTH3, list(reversed(TRUTH3)))  # order does not matter, ids do
    assert r.score == 1.0
    assert all(t.value == 1.0 for t in r.tasks)


def test_alignment_scores_class_poor_only():
    assert ALIGNMENT_SCORED_CLASS == 0
    truth = [P(f"A{i}", 0, a, [0] * 5, [0] * 11) for i, a in enumerate([0, 0, 1, 1])]
    pred = [P(f"A{i}", 0, a, [0] * 5, [0] * 11) for i, a in enumerate([0, 1, 1, 1])]
    r = challenge_score(truth, pred)
    # Class 0: tp1 fn1 -> 2/3. Class 1: tp2 fp1 -> 4/5. Macro would be 11/15; the task uses 2/3.
    assert r.alignment.value == pytest.approx(2 / 3)
    assert r.alignment.macro_f1 == pytest.approx(11 / 15)
    assert r.alignment.value == pytest.approx(skm.f1_score([0, 0, 1, 1], [0, 1, 1, 1], pos_label=0))


def test_alignment_without_any_poor_scores_zero():
    # Class 0 absent from truth and prediction: F1 is 0/0 -> 0 (zero_division=0), even though
    # every alignment is right.
    truth = [P("A", 0, 1, [0] * 5, [0] * 11), P("B", 1, 1, [0] * 5, [0] * 11)]
    r = challenge_score(truth, truth)
    assert r.alignment.value == 0.0 and r.alignment.accuracy == 1.0
    assert r.score == pytest.approx(0.8)


def test_missing_patient_is_listed_and_scored_as_wrong():
    r = challenge_score(TRUTH3, PRED3[:2])  # no prediction for P3
    assert r.missing_ids == ("P3",) and r.n_patients == 3
    # Curvature truth [0,1,2] pred [0,1,MISSING]: c0 1, c1 1, c2 fn1 -> 0; union {0,1,2} -> 2/3.
    assert r.curvature.value == pytest.approx(2 / 3)
    assert r.curvature.unpredicted == (0, 0, 1)
    assert r.curvature.confusion == ((1, 0, 0), (0, 1, 0), (0, 0, 0))
    # Alignment truth [0,1,0] pred [0,0,MISSING]: class 0 tp1 fp1 fn1 -> 1/2.
    assert r.alignment.value == pytest.approx(0.5)
    # Disc: P3's 5 items are false negatives: c0 tp5 fp1 -> 10/11; c1 tp4 fn1 -> 8/9; c2 fn4 -> 0;
    # c3 fn1 -> 0. Union {0,1,2,3} -> (10/11 + 8/9)/4.
    assert r.disc.value == pytest.approx((10 / 11 + 8 / 9) / 4)
    assert r.disc.n_items == 15 and sum(r.disc.unpredicted) == 5
    # Canal: c0 1, c1 1, c2 fn11 -> 0 -> 2/3.
    assert r.canal.value == pytest.approx(2 / 3)
    assert r.disc_levels[0].n_items == 3 and r.disc_levels[0].accuracy == pytest.approx(2 / 3)
    # A missing patient never beats predicting that patient correctly.
    assert r.score < challenge_score(TRUTH3, PRED3[:2] + [TRUTH3[2]]).score


def test_no_predictions_at_all_scores_zero():
    r = challenge_score(TRUTH3, [])
    assert r.score == 0.0
    assert r.missing_ids == ("P1", "P2", "P3")


def test_extra_predictions_are_listed_and_ignored():
    extra = P("P9", 2, 1, [3] * 5, [3] * 11)
    r = challenge_score(TRUTH3, PRED3 + [extra])
    assert r.extra_ids == ("P9",)
    assert r.score == pytest.approx(SCORE3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        challenge_score([], PRED3)
    with pytest.raises(ValueError):
        challenge_score(TRUTH3, PRED3 + [PRED3[0]])


def test_report_to_dict_is_json_ready():
    import json
    d = challenge_score(TRUTH3, PRED3[:2]).to_dict()
    back = json.loads(json.dumps(d))
    assert back["score"] == pytest.approx(d["score"])
    assert back["missing_ids"] == ["P3"]
    assert back["tasks"][0]["task"] == "curvature"
    assert back["tasks"][3]["per_class"][0]["name"] == "none"


# ----------------------------------------------------------------------------------------------
# The real training labels
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_truth():
    if not TRAIN_LABELS.is_file():
        pytest.skip(f"challenge labels not found at {TRAIN_LABELS}")
    return read_labels(TRAIN_LABELS)


def test_train_labels_against_themselves(train_truth):
    r = challenge_score(train_truth, train_truth)
    assert r.score == 1.0
    assert r.n_patients == len(train_truth) and r.missing_ids == ()


def test_train_labels_against_all_zeros(train_truth):
    # The submission template predicts 0 everywhere; the expected score is built from sklearn.
    zeros = [P(p.patient_id, 0, 0, [0] * 5, [0] * 11) for p in train_truth]
    r = challenge_score(train_truth, zeros)

    def col(attr):
        return np.array([getattr(p, attr) for p in train_truth]).ravel()

    expected = (
        0.2 * skm.f1_score(col("curvature"), np.zeros_like(col("curvature")), average="macro", zero_division=0)
        + 0.2 * skm.f1_score(col("alignment"), np.zeros_like(col("alignment")), pos_label=0, zero_division=0)
        + 0.3 * skm.f1_score(col("disc_grades"), np.zeros_like(col("disc_grades")), average="macro",
                             zero_division=0)
        + 0.3 * skm.f1_score(col("canal_grades"), np.zeros_like(col("canal_grades")), average="macro",
                             zero_division=0)
    )
    assert r.score == pytest.approx(expected, abs=1e-12)
    assert 0.0 < r.score < 0.25
    # Predicting only class 0: its sensitivity is 1 and every other class's is 0.
    for t in r.tasks:
        assert t.per_class[0].sensitivity == 1.0
        assert all(c.sensitivity == 0.0 for c in t.per_class[1:])


# ----------------------------------------------------------------------------------------------
# Bootstrap interval of the score over patients
# ----------------------------------------------------------------------------------------------
def _cohort(n: int, seed: int, flip: float):
    """n random patients and predictions that differ from them in a fraction `flip` of the items."""
    rng = np.random.default_rng(seed)
    truth, pred = [], []
    for i in range(n):
        t = P(f"p{i}", int(rng.integers(3)), int(rng.random() < 0.2), [int(g) for g in rng.integers(0, 4, 5)],
              [int(g) for g in rng.integers(0, 4, 11)])
        q = P(f"p{i}", *(v if rng.random() > flip else int(rng.integers(3 if k == 0 else 2))
                          for k, v in enumerate((t.curvature, t.alignment))),
              [g if rng.random() > flip else int(rng.integers(4)) for g in t.disc_grades],
              [g if rng.random() > flip else int(rng.integers(4)) for g in t.canal_grades])
        truth.append(t)
        pred.append(q)
    return truth, pred


def test_bootstrap_interval_brackets_the_score_and_narrows_with_more_patients():
    truth, pred = _cohort(200, 1, 0.3)
    score = challenge_score(truth, pred).score
    lo, hi = bootstrap_interval(truth, pred, n_resamples=200)
    assert lo < score < hi
    lo_small, hi_small = bootstrap_interval(truth[:20], pred[:20], n_resamples=200)
    assert hi_small - lo_small > 1.5 * (hi - lo)   # about sqrt(10) wider with a tenth of the patients
    assert bootstrap_interval(truth, pred, n_resamples=200) == (lo, hi)   # seeded: reproducible


def test_bootstrap_interval_of_a_perfect_reading_and_of_missing_predictions():
    truth, _ = _cohort(50, 2, 0.0)
    assert bootstrap_interval(truth, truth, n_resamples=50) == (1.0, 1.0)
    lo, hi = bootstrap_interval(truth, truth[:25], n_resamples=200)   # half the patients unread: wrong
    assert hi < 0.9 and lo > 0.1
    with pytest.raises(ValueError):
        bootstrap_interval([], [])

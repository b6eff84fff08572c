"""``student_mnist``: chapter 15's small MLP student distilled from the shipped MNIST classifier."""
from __future__ import annotations

import time

from course_lib.core import checkpointing
from course_lib.core.profiles import per_profile
from course_lib.core.runtime import device
from course_lib.core.train import FAST, History, resolve_precision
from course_lib.data import load_mnist
from course_lib.eval.fid import shipped_classifier
from course_lib.topics import distillation
from course_lib.zoo.common import classification_step
from course_lib.zoo.record import Measurement, ShippedModel, Trained, mean_of_last, register


def settings(active: str | None = None):
    """StudentMLP(hidden 64); only ``n_labelled`` = 1,000 labelled training digits and no other images (the
    transfer set is those same 1,000 images); the teacher is the shipped ``mnist_classifier``; T = 4,
    alpha = 0.9; AdamW(3e-3, weight decay 1e-4), cosine; batch 128. The labels-only student it is benched
    against has the same data, steps and optimizer, with cross entropy alone."""
    common = dict(hidden=64, n_labelled=1_000, n_transfer=1_000, temperature=4.0, alpha=0.9, lr=3e-3,
                  batch_size=128)
    return per_profile(ci=dict(**common, steps=50), cpu=dict(**common, steps=2_000),
                       gpu=dict(**common, steps=2_000), active=active)


def _data(s):
    x, y = load_mnist("train")
    return distillation.transfer_set(x, y, s.n_labelled, s.n_transfer)


def _labels_only(s, seed: int = 0):
    images, labels = _data(s)
    student, _ = distillation.train_student(images, labels, teacher_logits=None, steps=s.steps,
                                            batch_size=s.batch_size, lr=s.lr, hidden=s.hidden, seed=seed,
                                            show_progress=False)
    return student


def train(active: str | None = None, seed: int = 0, show_progress: bool = True) -> Trained:
    """Metrics: test accuracy of the distilled student and of the labels-only student (same budget)."""
    s = settings(active)
    start = time.perf_counter()
    images, labels = _data(s)
    teacher = shipped_classifier(device()) if "mnist_classifier" in checkpointing.read_manifest() else None
    if teacher is None:
        raise FileNotFoundError("student_mnist needs the shipped mnist_classifier (its teacher): train it first")
    teacher_logits = distillation.teacher_logits_of(teacher, images)
    student, losses = distillation.train_student(
        images, labels, teacher_logits=teacher_logits, steps=s.steps, batch_size=s.batch_size, lr=s.lr,
        hidden=s.hidden, temperature=s.temperature, alpha=s.alpha, seed=seed, device=device(),
        precision=FAST["precision"], show_progress=show_progress)
    x_test, y_test = load_mnist("test")
    history = History(wall_time_s=time.perf_counter() - start,
                      precision=resolve_precision(FAST["precision"], device()))
    history.losses = losses
    metrics = {"test_accuracy": round(distillation.test_accuracy(student, x_test, y_test), 4),
               "labels_only_test_accuracy": round(distillation.test_accuracy(_labels_only(s, seed), x_test, y_test), 4),
               "final_train_loss": mean_of_last(losses, 50)}
    recipe = {"recipe": __name__, "seed": seed, "model": student.config,
              "teacher": "mnist_classifier (course_lib.eval.fid.shipped_classifier)", **vars(s)}
    return Trained(student, history, metrics, recipe)


def evaluate(model, entry, options) -> Measurement:
    """Test accuracy (10k) of the distilled student, against the labels-only student retrained now with the
    same recipe, and the teacher."""
    x_test, y_test = load_mnist("test")
    s = settings("cpu")
    return Measurement("MNIST test accuracy (10k), MLP student, 1,000 labels", distillation.test_accuracy(
        model, x_test, y_test), {
        "labels-only student, same data and steps (retrained now)": round(
            distillation.test_accuracy(_labels_only(s), x_test, y_test), 4),
        "teacher (mnist_classifier)": round(distillation.test_accuracy(shipped_classifier(), x_test, y_test), 4)})


RECORD = register(ShippedModel(
    name="student_mnist", chapter="15", settings=settings, train=train,
    build=lambda entry: distillation.StudentMLP(**entry["recipe"]["model"]), evaluate=evaluate,
    training_step=classification_step))

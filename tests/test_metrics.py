import pytest
import torch

from synthgap.metrics import accuracy_metrics


def test_top1_and_per_class_on_hand_made_logits():
    logits = torch.tensor([[2.0, 1, 0], [0, 3, 1], [5, 0, 1], [0, 0, 1]])
    y = torch.tensor([0, 1, 1, 2])
    m = accuracy_metrics(logits, y)
    assert m["top1"] == pytest.approx(75.0)
    assert m["per_class"] == pytest.approx([100.0, 50.0, 100.0])
    assert "top5" not in m


def test_top5_only_with_more_than_ten_classes():
    logits = torch.arange(12.0).repeat(2, 1)  # class 11 best, then 10, 9, 8, 7
    m = accuracy_metrics(logits, torch.tensor([7, 6]))
    assert m["top1"] == 0.0 and m["top5"] == pytest.approx(50.0)

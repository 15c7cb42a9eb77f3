"""Code shapes that once stopped a rule family with an internal error (TD000 "please report
it", the file's other findings lost): each must lint quietly."""

from __future__ import annotations

from torchdoctor.lint import lint_source


def _codes(source: str) -> list[str]:
    return [f.code for f in lint_source(source, "t.py")]


def test_a_helper_called_from_a_lambda_is_checked_for_an_eval_model():
    """TD602's search for a caller's `model.eval()` statement read a lambda's body, one
    expression, as statements: 55 files of torch itself (torch/_meta_registrations.py ...)
    were "internal error (TypeError: 'BinOp' object is not iterable)"."""
    source = (
        "def ceil_div(a, b):\n"
        "    return (a + b - 1) // b\n"
        "blocks = lambda k: ceil_div(k, 128) * 128\n"
        "# the family runs on a file that projects (proj) something\n"
    )
    assert "TD000" not in _codes(source)


def test_a_comprehension_whose_calls_train_is_looked_into_without_a_body():
    """TD602's walk into a loop that trains read a comprehension's body: a MAML script's
    `torch.stack([finetune_eval(model, t) for t in val_tasks])` in its meta-training loop,
    finetune_eval running backward, was "internal error (AttributeError: 'ListComp' object
    has no attribute 'body')" and the file's other findings were lost."""
    source = (
        "import torch\n"
        "def finetune_eval(model, task):\n"
        "    model(task).sum().backward()\n"
        "def meta_train(model, loader, val_tasks, opt):\n"
        "    for x in loader:\n"
        "        model(x).sum().backward()\n"
        "        opt.step()\n"
        "        acc = torch.stack([finetune_eval(model, t) for t in val_tasks])\n"
        "        total += loss.item()\n"
    )
    codes = _codes(source)
    assert "TD000" not in codes
    assert "TD201" in codes


def test_a_mask_that_grows_from_itself_is_followed_once():
    """TD301/TD207's search for the loop a mask compares against followed a name to its
    assignment: a GFlowNet sampler's `done = done | stop` then `torch.where(done, ...)` led
    from `done` back to `done | stop` forever, "internal error (RecursionError: maximum
    recursion depth exceeded)", and the file's other findings (here TD201) were lost."""
    source = (
        "import torch\n"
        "def train(policy, opt, x, done, n):\n"
        "    for t in range(n):\n"
        "        stop = policy(x).argmax(-1) == 0\n"
        "        x = torch.where(done, 0.0, x)\n"
        "        done = done | stop\n"
        "        loss = policy(x).sum()\n"
        "        loss.backward()\n"
        "        opt.step()\n"
        "        print(loss.item())\n"
    )
    codes = _codes(source)
    assert "TD000" not in codes
    assert "TD201" in codes

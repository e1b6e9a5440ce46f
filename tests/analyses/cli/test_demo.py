"""``sparse-lens demo``'s own files, with the model, the pruning and the report stubbed out:
what ``tasks.json`` and ``summary.json`` record (the demo run itself: ``test_commands.py``)."""

import analyses.cli.demo as demo


def test_the_quick_demo_says_how_long_it_takes():
    """``--quick`` was "a one-minute smoke version"; it takes about 20 s on 2 cores."""
    from analyses.cli.parser import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["demo"]
    quick = next(a for a in sub._actions if "--quick" in a.option_strings)
    for text in (quick.help or "", " ".join((demo.__doc__ or "").split())):
        assert "about 20 s on 2 cores" in text and "minute" not in text

"""The check every Processing algorithm's help passes: each parameter named by its dialog label and script name,
and no command line anywhere in the dialog's texts (a QGIS user presses buttons)."""

from __future__ import annotations


def assert_help_names_every_parameter(algorithm) -> str:
    """Asserts it for ``algorithm``; returns the help text for the caller's own checks."""
    help_text = algorithm.shortHelpString()
    for definition in algorithm.parameterDefinitions():
        assert f"({definition.name()}" in help_text, definition.name()
        assert definition.description().split(" (")[0] in help_text, definition.description()
    texts = [help_text] + [d.description() for d in algorithm.parameterDefinitions()]
    assert not [t for t in texts if "`" in t or "rsseg " in t or "--" in t], "a command in the dialog's texts"
    return help_text

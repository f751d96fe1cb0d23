"""`python -m benchmarks.run --update`: one suite's section replaced in place, the others kept."""
from benchmarks.run import update_sections

DOC = ("# Benchmarks\n\nheader\n\n## EfficientNet\n\nrows e\n\n## Scale\n\nold scale\n\n"
       "Total benchmark wall time: 10 s.\n")


def test_replaces_the_section_of_the_same_title_only():
    out = update_sections(DOC, ["## Scale\n\nnew scale\n"])
    assert out == DOC.replace("old scale", "new scale")


def test_adds_a_new_section_before_the_wall_time_line():
    out = update_sections(DOC, ["## Keras applications\n\ntable\n"])
    assert out.index("## Keras applications") > out.index("old scale")
    assert out.endswith("table\n\nTotal benchmark wall time: 10 s.\n")
    assert "rows e" in out and out.count("## ") == 3

"""User text in markdown: dashboard.text.md, and the pages that quote query values, uploaded files and stored
messages (AppTest: the markdown source Streamlit receives has them escaped, so a link, an image or LaTeX in a
value is shown as text)."""
import random
import re
import string

import pytest
import torch
import io
from streamlit.testing.v1 import AppTest

from history_helpers import EMPTY_DATA_DIR, REPO_ROOT, build_store, history_app, history_environment
from core.exchange.weights import run_weights_bytes
from dashboard.text import WORD_JOINER, md

LINK = "x`[CLICKME](https://evil.example/x)`"  # ?run=x%60%5BCLICKME%5D(https://evil.example/x)%60
IMAGE = "![IMG](http://127.0.0.1:9/p.png)"
NASTY = [LINK, IMAGE, "[CLICKME](https://evil.example/x)", "$\\frac{a}{b}$", ":red[alarm] :material/home:",
         "<img src=x onerror=alert(1)>", "<https://evil.example>", "https://evil.example/bare www.evil.example",
         "a@evil.example", "# heading\n- item\n\n| a | b |\n|---|---|", "**bold** _it_ ~~gone~~", "\\`\\[x\\](y)",
         "1. one\r\n2) two", "````", "&lt;b&gt; &amp;", "HTTPS://EVIL.EXAMPLE _www.evil.example mailto:a@b.c"]


# What Streamlit links in text after parsing, escaped or not (mdast-util-gfm-autolink-literal's patterns).
GFM_LITERAL_AUTOLINKS = [re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I),
                         re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")]


def unescape(source: str) -> str:
    """CommonMark's reading of a backslash escape, and a check that no punctuation is left unescaped."""
    out, i = [], 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            assert i + 1 < len(source) and source[i + 1] in string.punctuation, (source, i)
            out.append(source[i + 1])
            i += 2
            continue
        assert char not in string.punctuation, f"unescaped {char!r} at {i} in {source!r}"
        out.append(char)
        i += 1
    return "".join(out)


def inert(source: str, value: str) -> bool:
    """The markdown source quotes `value` escaped: every punctuation character of it behind a backslash."""
    return md(value) in source and not re.search(r"(?<!\\)\]\(|(?<!\\)!\[", source.replace(md(value), ""))


@pytest.mark.parametrize("value", NASTY)
def test_md_escapes_every_markdown_character_and_reads_back_as_the_value(value):
    escaped = md(value)
    assert "\n" not in escaped and "\r" not in escaped  # one line: a value cannot start a block of its own
    text = unescape(escaped)  # the text nodes Streamlit's parser makes of it
    assert text.replace(WORD_JOINER, "") == re.sub(r"\r\n|[\r\n]", " ", value)
    assert not [m.group(0) for p in GFM_LITERAL_AUTOLINKS for m in p.finditer(text)]  # no bare URL left to link


def test_md_round_trips_random_text():
    rng = random.Random(0)
    alphabet = string.printable + "äß€😀\u2028"
    for _ in range(500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        text = unescape(md(value))
        assert text.replace(WORD_JOINER, "") == re.sub(r"\r\n|[\r\n\u2028\x0b\x0c]", " ", value)
        assert not [m.group(0) for p in GFM_LITERAL_AUTOLINKS for m in p.finditer(text)]


def test_md_takes_any_value():
    assert md(None) == "None" and md(3.5) == "3\\.5" and md(ValueError("a_b")) == "a\\_b"


# -- pages --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory):
    db = tmp_path_factory.mktemp("template") / "runs.db"
    return db, build_store(db, EMPTY_DATA_DIR)


@pytest.fixture
def history_env(tmp_path, monkeypatch, template):
    with history_environment(template[0], tmp_path, monkeypatch, EMPTY_DATA_DIR) as store:
        yield store, template[1]


@pytest.mark.parametrize("value", [LINK, IMAGE])
def test_a_run_id_from_the_link_is_shown_as_text_on_history(history_env, value):
    at = history_app(run=value)
    assert not at.exception
    (warning,) = [w.value for w in at.warning if "from the link" in w.value]
    assert inert(warning, value), warning  # before: "Run `x`[CLICKME](https://evil.example/x)``": a live link


@pytest.mark.parametrize("value", [LINK, IMAGE])
def test_a_run_id_from_the_link_is_shown_as_text_on_train(app_manager, value):
    at = AppTest.from_file(str(REPO_ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["run"] = value
    at.run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert error.startswith("No run with id ") and inert(error, value), error  # the id as text: no link, no image


def test_an_uploaded_run_id_is_shown_as_text(history_env, tmp_path):
    store, ids = history_env
    payload = torch.load(io.BytesIO(run_weights_bytes(store, ids["adam"])), weights_only=True)
    payload["run"]["id"] = LINK
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    at = history_app()
    at.file_uploader[0].set_value(("crafted.pt", path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception
    (success,) = [s.value for s in at.success]
    assert success.startswith("Loaded mnist [32] relu") and inert(success, LINK), success
    at.button(key="hist_up_add").click().run()
    (run_id,) = [r["id"] for r in store.list_runs() if r["origin"] == "upload"]
    at = history_app(run=run_id)  # the stored message quotes the original id: escaped there too
    assert not at.exception
    assert any(inert(c.value, LINK) and "imported from a weights file" in c.value for c in at.caption)


def sidebar_app(**query) -> AppTest:
    def script():
        from dashboard.controls import settings_sidebar
        from dashboard.share import apply_share_link

        apply_share_link()
        settings_sidebar()

    at = AppTest.from_function(script, default_timeout=30)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


@pytest.mark.parametrize("key, value", [("hidden", "[CLICKME](https://evil.example/x)"), ("hidden", IMAGE),
                                        ("activation", "$x$ :red[y]"), ("then", LINK)])
def test_share_link_values_are_quoted_as_text(key, value):
    at = sidebar_app(**{key: value})
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert "not applied" in error and inert(error, value), error  # before: a live link inside the error box


def test_a_negative_width_in_a_share_link_is_refused():
    at = sidebar_app(hidden="-64")
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert md("hidden='-64': must be from 1 to 8192; got -64") in error, error  # before: read as 64, applied
    assert at.slider(key="cfg_hidden").value == 32

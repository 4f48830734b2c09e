"""view_animation.html in a real (headless) Chromium: steps, keys, file loading, and model text never executing.

Skipped, with the reason, when the playwright package or a Chromium binary is missing.
"""

import colorsys
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import visualize_generation
from textdiffusion import rendering

pytestmark = pytest.mark.slow  # starts processes / a browser

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
]
HOSTILE = ['<img src=x onerror="window.__pwned=1">', "<script>window.__pwned=1</script>"]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (set CHROMIUM=/path/to/chromium)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        except Error as err:  # a browser that does not start
            pytest.skip(f"Chromium at {CHROMIUM} did not start: {str(err).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.errors = errors
    yield page
    page.close()


@pytest.fixture(scope="module")
def run_dir(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer-run")
    visualize_generation.main(
        ["--checkpoint", tiny_checkpoint, "--output-dir", str(out), "--prompt", "tom found", "--max-length", "24",
         "--steps", "7", "--strategy", "remask", "--fps", "20", "--hold", "0.05"]
    )
    return out


def _viewer_dir(tmp_path, data=None, run_js=None) -> Path:
    """A directory with the viewer and a run.js holding `data` (or the literal script `run_js`)."""
    shutil.copyfile(REPO / "view_animation.html", tmp_path / "view_animation.html")
    if data is not None:
        run_js = f"window.DIFFUSION_RUN = {json.dumps(data)};\n"
    if run_js is not None:
        (tmp_path / "run.js").write_text(run_js)
    return tmp_path / "view_animation.html"


def _hostile_run():
    tokens = ["tom", " found", HOSTILE[0], " ", HOSTILE[1], "\x07", "\n"]
    labels = ["fixed", "fixed", "new", "revealed", "revealed", "new", "revealed"]
    first = {"step": 0, "tokens": tokens, "labels": ["fixed", "fixed"] + ["masked"] * 5}
    return {"model": HOSTILE[0], "prompt": HOSTILE[1], "settings": {"schedule": HOSTILE[1], "steps": 1},
            "states": [first, {"step": 1, "tokens": tokens, "labels": labels}]}


def test_viewer_shows_every_step_and_keys_change_the_state(page, run_dir, tmp_path):
    states = json.loads((run_dir / "run.json").read_text())["states"]
    last = len(states) - 1
    assert last == 7
    page.goto((run_dir / "view_animation.html").as_uri())
    assert not page.is_visible("#error")
    assert page.text_content("#step-total") == str(last)
    assert page.get_attribute("#scrubber", "max") == str(last)
    assert page.get_attribute("body", "data-step") == "0"
    assert page.locator("#tokens .tok").count() == len(states[0]["tokens"])

    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("body", "data-step") == "2"
    assert page.text_content("#step-now") == "2" and page.input_value("#scrubber") == "2"
    page.keyboard.press("ArrowLeft")
    assert page.get_attribute("body", "data-step") == "1"

    assert page.is_hidden("#grid")
    page.keyboard.press("f")
    assert page.is_visible("#grid")
    assert page.locator("#grid .card").count() == last + 1
    page.keyboard.press("f")
    assert page.is_hidden("#grid")

    page.keyboard.press(" ")
    assert page.get_attribute("body", "data-playing") == "true"
    page.keyboard.press(" ")
    assert page.get_attribute("body", "data-playing") == "false"
    step_after_pause = page.get_attribute("body", "data-step")
    page.wait_for_timeout(300)
    assert page.get_attribute("body", "data-step") == step_after_pause

    page.keyboard.press("ArrowRight")
    page.keyboard.press("r")  # replay: back to step 0 and playing to the last step (50 ms a frame here)
    page.wait_for_selector(f"body[data-step='{last}'][data-playing='false']", state="attached", timeout=10000)

    page.keyboard.press("f")
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)  # nothing is written into the repository
    assert (tmp_path / "viewer.png").stat().st_size > 0
    assert page.errors == []


def test_shown_text_at_each_step_is_that_steps_tokens(page, run_dir):
    states = json.loads((run_dir / "run.json").read_text())["states"]
    page.goto((run_dir / "view_animation.html").as_uri())
    for k, state in enumerate(states):
        page.evaluate(f"window.diffusionViewer.show({k})")
        spans = page.eval_on_selector_all("#tokens .tok", "nodes => nodes.map(n => [n.className, n.textContent])")
        tokens, labels, previous_tokens, _ = rendering.collapse_end_runs(state["tokens"], state["labels"], state["previous"], state["end_token"])
        assert [cls.split()[1] for cls, _ in spans] == labels
        for (cls, text), token, label, previous in zip(spans, tokens, labels, previous_tokens):
            shown = previous if label == "remasked" else token  # a re-masked slot shows the hidden token, struck through
            if label == "masked":
                assert text == ""
            elif shown.isprintable() and shown.strip(" "):
                assert text == shown
            else:  # newlines become an arrow and a line break, control characters visible escapes
                assert text and all(ch.isprintable() or ch == "\n" for ch in text)


def test_model_text_is_shown_literally_and_never_executes(page, tmp_path):
    page.goto(_viewer_dir(tmp_path, data=_hostile_run()).as_uri())
    page.evaluate("window.diffusionViewer.show(1)")
    tokens = page.text_content("#tokens")
    assert HOSTILE[0] in tokens and HOSTILE[1] in tokens and "\\x07" in tokens
    assert HOSTILE[0] in page.text_content("#settings") and HOSTILE[1] in page.text_content("#prompt-line")
    assert page.locator("#tokens img, #tokens script, #settings img").count() == 0
    page.wait_for_timeout(200)
    assert page.evaluate("typeof window.__pwned") == "undefined"

    # the same through the file picker
    other_run = _hostile_run()
    other_run["states"].append(dict(other_run["states"][1], step=2))
    other = tmp_path / "other.json"
    other.write_text(json.dumps(other_run))
    page.set_input_files("#file", str(other))
    page.wait_for_selector("#grid .card:nth-child(3)", state="attached")  # loaded: this run has three steps
    page.keyboard.press("f")
    assert HOSTILE[1] in page.text_content("#grid")
    assert page.locator("img").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.errors == []


@pytest.mark.parametrize(
    "run_js, message",
    [
        ("window.DIFFUSION_RUN = {\"states\": \"nope\"};", "'states' must be a non-empty list"),
        ("window.DIFFUSION_RUN = {\"states\": [{\"tokens\": [\"a\"], \"labels\": []}]};", "1 tokens but 0 labels"),
        ("window.DIFFUSION_RUN = {\"states\": [{\"tokens\": [\"a\"], \"labels\": [\"bold\"]}]};", "'bold'"),
        ("window.DIFFUSION_RUN = 42;", "not a JSON object"),
        ("window.DIFFUSION_RUN = {\"states\": [{\"tokens\": [\"a\"], \"labels\": [\"new\"], \"active\": [1, 0]}]};",
         "states[0].active must be a list of 1 true/false values"),
        ("window.DIFFUSION_RUN = {\"states\": [{\"tokens\": [\"a\"], \"labels\": [\"new\"], \"confidence\": [2]}]};",
         "states[0].confidence must be a list of 1 probabilities (or null)"),
        ("window.DIFFUSION_RUN = {states: [", "no run.js"),  # a syntax error: the data never arrives
        (None, "no run.js"),
    ],
)
def test_malformed_run_data_shows_an_error_on_the_page(page, tmp_path, run_js, message):
    page.goto(_viewer_dir(tmp_path, run_js=run_js).as_uri())
    assert page.is_visible("#error")
    assert message in page.text_content("#error")


def test_a_file_that_is_not_json_shows_an_error(page, run_dir, tmp_path):
    page.goto((run_dir / "view_animation.html").as_uri())
    bad = tmp_path / "broken.json"
    bad.write_text("{ this is not json")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error", state="visible")
    assert "broken.json is not valid JSON" in page.text_content("#error")


def test_a_run_of_end_tokens_is_one_labelled_chip(page, tmp_path):
    tokens = ["tom", " found", " it", *["</s>"] * 30]
    state = {"step": 1, "tokens": tokens, "labels": ["fixed", "new", "new", *["new"] * 30], "end_token": "</s>"}
    first = {"step": 0, "tokens": tokens, "labels": ["fixed"] + ["masked"] * 32, "end_token": "</s>"}
    page.goto(_viewer_dir(tmp_path, {"settings": {"steps": 1}, "states": [first, state]}).as_uri())
    page.evaluate("window.diffusionViewer.show(1)")
    spans = page.eval_on_selector_all("#tokens .tok", "nodes => nodes.map(n => [n.className, n.textContent, n.title])")
    assert [text for _, text, _ in spans] == ["tom", " found", " it", "</s> \u00d730"]
    assert spans[-1][0].split() == ["tok", "new", "run"] and spans[-1][2] == "30 end tokens"
    page.evaluate("window.diffusionViewer.show(0)")  # masked slots are never merged
    assert len(page.query_selector_all("#tokens .tok")) == 33
    assert page.errors == []


def test_an_end_chip_whose_tokens_differ_in_state_has_one_part_per_state(page, tmp_path):
    tokens = ["tom", " found", *["</s>"] * 4]
    first = {"step": 0, "tokens": tokens, "labels": ["fixed", "fixed"] + ["masked"] * 4, "end_token": "</s>"}
    one = {"step": 1, "tokens": tokens, "labels": ["fixed", "fixed", "masked", "new", "masked", "masked"], "end_token": "</s>",
           "confidence": [None, None, None, 0.75, None, None]}
    two = {"step": 2, "tokens": tokens, "labels": ["fixed", "fixed", "new", "revealed", "new", "new"], "end_token": "</s>",
           "confidence": [None, None, 0.5, 0.75, 1.0, 0.875]}
    page.goto(_viewer_dir(tmp_path, {"settings": {"steps": 2}, "states": [first, one, two]}).as_uri())
    page.evaluate("window.diffusionViewer.show(2)")
    spans = page.eval_on_selector_all("#tokens .tok", "nodes => nodes.map(n => [n.className.split(' ').slice(1, 3), n.textContent, n.dataset.pos])")
    expected = rendering.collapse_end_runs(tokens, two["labels"], [None] * 6, "</s>")
    assert [text for _, text, _ in spans] == expected[0] == ["tom", " found", "</s> \u00d71", " </s> \u00d73"]
    assert [cls for cls, _, _ in spans][2:] == [["revealed", "run"], ["new", "run"]]
    assert [pos for _, _, pos in spans][2:] == ["3", "2,4,5"]
    colours = _colours(page)
    assert colours[2] == "rgb(232, 232, 232)" and colours[3] == "rgb(61, 220, 132)"  # each part its state's colour
    page.hover("#tokens .tok[data-pos='2,4,5']")
    panel = page.text_content("#inspect")
    assert "3 end tokens, at positions 2, 4, 5." in panel and "Revealed: \u00d73 at step 2 (this step)." in panel
    assert "drew each with probability at least 50.0%." in panel  # the least sure of the three
    page.hover("#tokens .tok[data-pos='3']")  # a part of one token explains that token
    assert "Position 3." in page.text_content("#inspect") and "Revealed at step 1." in page.text_content("#inspect")
    assert page.errors == []


def _panel_candidates(page):
    """The candidate rows of the panel: [(token as JSON, percent shown, chosen?)]."""
    return page.eval_on_selector_all(
        "#inspect li", "items => items.map(li => [li.querySelector('.cand').textContent, li.querySelector('.pct').textContent, li.classList.contains('chosen')])")


def _percent(text: str) -> float:
    return float(text.rstrip("%"))


@pytest.fixture(scope="module")
def confidence_run(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer-confidence-run")
    visualize_generation.main(
        ["--checkpoint", tiny_checkpoint, "--output-dir", str(out), "--prompt", "tom found", "--max-length", "24",
         "--steps", "8", "--strategy", "confidence", "--fps", "20", "--hold", "0.05"]
    )
    return out, json.loads((out / "run.json").read_text())["states"]


def _kept_from(states, k):
    """Positions step k revealed that keep their token to the last step."""
    return [i for i, label in enumerate(states[k]["labels"]) if label == "new" and all(s["labels"][i] == "revealed" for s in states[k + 1:])]


def test_a_token_revealed_at_step_1_shows_its_candidates_at_the_last_step(page, confidence_run):
    out, states = confidence_run
    last = len(states) - 1
    page.goto((out / "view_animation.html").as_uri())
    page.evaluate(f"window.diffusionViewer.show({last})")
    shown = [i for i in _kept_from(states, 1) if page.locator(f"#tokens .tok[data-pos='{i}']").count()]  # not in an end chip
    assert shown, "step 1 revealed no token that stays to the end as a token of its own"
    i = shown[0]
    page.hover(f"#tokens .tok[data-pos='{i}']")
    panel = page.text_content("#inspect")
    assert "Revealed at step 1." in panel and f"Position {i}." in panel
    weighed = states[1]["candidates"][i]
    rows = _panel_candidates(page)
    assert [json.loads(token) for token, _, _ in rows] == [token for token, _ in weighed]
    assert all(abs(_percent(pct) - 100 * p) < 0.051 for (_, pct, _), (_, p) in zip(rows, weighed))
    assert [chosen for _, _, chosen in rows] == [token == states[last]["tokens"][i] for token, _ in weighed]
    drawn = states[1]["confidence"][i]
    assert abs(float(re.search(r"drew it with probability ([0-9.]+)%", panel).group(1)) - 100 * drawn) < 0.051
    # every token shown at the last step explains itself: the ones revealed at each step, not only the last one's
    assert page.locator("#tokens .tok.revealed:not(.scored)").count() == 0
    assert states[last]["confidence"][i] == drawn  # the run data carries it to the last step
    assert page.locator("#tokens [title^='candidates']").count() == 0 and page.errors == []


def test_tapping_a_token_pins_it_to_the_panel_while_stepping(browser, confidence_run):
    out, states = confidence_run
    last = len(states) - 1
    page = browser.new_page(viewport={"width": 800, "height": 900}, has_touch=True)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto((out / "view_animation.html").as_uri())
    page.evaluate(f"window.diffusionViewer.show({last})")
    k = next(k for k in range(2, last) if any(page.locator(f"#tokens .tok[data-pos='{i}']").count() for i in _kept_from(states, k)))
    i = next(i for i in _kept_from(states, k) if page.locator(f"#tokens .tok[data-pos='{i}']").count())
    page.tap(f"#tokens .tok[data-pos='{i}']")
    assert page.get_attribute("body", "data-pinned") == str(i)
    assert "Pinned token" in page.text_content("#inspect") and f"Revealed at step {k}." in page.text_content("#inspect")
    assert "picked" in page.get_attribute(f"#tokens .tok[data-pos='{i}']", "class")
    page.evaluate(f"window.diffusionViewer.show({k - 1})")  # before it was revealed: the pinned slot is still masked
    assert f"Position {i}: still masked." in page.text_content("#inspect")
    page.evaluate(f"window.diffusionViewer.show({k})")
    assert f"Revealed at step {k} (this step)." in page.text_content("#inspect")
    page.keyboard.press("Escape")
    assert page.get_attribute("body", "data-pinned") == "" and "Hover over or tap a token" in page.text_content("#inspect")
    assert errors == []
    page.close()


def test_the_candidates_panel_is_visible_in_a_screenshot(page, tmp_path):
    tokens = ["tom", " found", " a", " ball"]
    first = {"step": 0, "tokens": tokens, "labels": ["fixed", "fixed", "masked", "masked"]}
    state = {"step": 1, "tokens": tokens, "labels": ["fixed", "fixed", "new", "masked"], "confidence": [None, None, 0.5, None],
             "candidates": [None, None, [[" a", 0.5], [" <b>x</b>", 0.25], [" the", 0.125]], None]}
    page.goto(_viewer_dir(tmp_path, {"settings": {"steps": 1}, "states": [first, state]}).as_uri())
    page.evaluate("window.diffusionViewer.show(1)")
    page.click("#tokens .tok[data-pos='2']")
    page.mouse.move(0, 0)  # the pointer leaves: the pinned token stays in the panel
    panel = page.locator("#inspect")
    assert panel.is_visible()
    box = panel.bounding_box()
    assert box["width"] > 200 and box["height"] > 100
    assert _panel_candidates(page) == [['" a"', "50.0%", True], ['" <b>x</b>"', "25.0%", False], ['" the"', "12.5%", False]]
    assert page.query_selector("#inspect b") is None  # candidates are text, never markup
    assert "Revealed at step 1 (this step)." in panel.text_content() and "drew it with probability 50.0%" in panel.text_content()
    shot = tmp_path / "panel.png"
    panel.screenshot(path=str(shot))
    with Image.open(shot) as image:
        assert image.width >= box["width"] - 1 and len(set(image.convert("RGB").getdata())) > 10  # drawn text, not a blank box
    assert page.errors == []


def _colours(page):
    return page.eval_on_selector_all("#tokens .tok", "nodes => nodes.map(n => getComputedStyle(n).color)")


def _hsl(hue: float) -> str:
    r, g, b = colorsys.hls_to_rgb(hue / 360, 0.62, 0.75)
    return f"rgb({round(r * 255)}, {round(g * 255)}, {round(b * 255)})"


def test_colouring_by_confidence_changes_the_tokens_colours(page, tmp_path):
    tokens = ["tom", " found", " a", " red", " ball", "<mask>"]
    first = {"step": 0, "tokens": tokens, "labels": ["fixed", "fixed"] + ["masked"] * 4}
    one = {"step": 1, "tokens": tokens, "labels": ["fixed", "fixed", "new", "masked", "new", "masked"], "confidence": [None, None, 0.9, None, 0.2, None]}
    two = {"step": 2, "tokens": tokens, "labels": ["fixed", "fixed", "revealed", "new", "revealed", "masked"], "confidence": [None, None, 0.9, 1.0, 0.2, None]}
    page.goto(_viewer_dir(tmp_path, {"settings": {"steps": 2}, "states": [first, one, two]}).as_uri())
    page.evaluate("window.diffusionViewer.show(2)")
    plain = _colours(page)
    assert plain[2] == plain[4] == "rgb(232, 232, 232)" and plain[3] == "rgb(61, 220, 132)"  # revealed earlier, new
    assert page.is_hidden("#confidence-key")
    page.check("#by-confidence")
    coloured = _colours(page)
    assert coloured[:2] == plain[:2] == ["rgb(90, 169, 255)"] * 2  # the prompt has no confidence: its own colour
    assert coloured[2:5] == [_hsl(150 * 0.9), _hsl(150 * 1.0), _hsl(150 * 0.2)]  # red (unsure) to green (sure)
    assert page.is_visible("#confidence-key")
    page.keyboard.press("c")  # the key turns it off again
    assert _colours(page) == plain and page.errors == []


def _remask_run():
    """Step 1 reveals ' b' and ' c', step 2 re-masks ' b', it stays masked at step 3 and ' d' fills it at step 4."""
    tokens = [["a", "<mask>", "<mask>"], ["a", " b", " c"], ["a", "<mask>", " c"], ["a", "<mask>", " c"], ["a", " d", " c"]]
    labels = [["fixed", "masked", "masked"], ["fixed", "new", "new"], ["fixed", "remasked", "revealed"],
              ["fixed", "masked", "revealed"], ["fixed", "new", "revealed"]]
    previous = [[None] * 3, [None] * 3, [None, " b", None], [None] * 3, [None] * 3]
    candidates = [None, [None, [[" b", 0.5], [" d", 0.25]], [[" c", 0.75]]], None, None, [None, [[" d", 0.625]], None]]
    states = [{"step": k, "tokens": t, "labels": lab, "previous": prev, "candidates": cand}
              for k, (t, lab, prev, cand) in enumerate(zip(tokens, labels, previous, candidates))]
    return {"settings": {"steps": 4}, "states": states}


def test_a_re_masked_token_shows_what_it_was_while_its_slot_is_masked(page, tmp_path):
    page.goto(_viewer_dir(tmp_path, _remask_run()).as_uri())
    page.evaluate("window.diffusionViewer.show(2)")
    assert page.text_content("#tokens .tok[data-pos='1']") == " b"  # struck through, in the re-masking step
    page.hover("#tokens .tok[data-pos='1']")
    panel = page.text_content("#inspect")
    assert "Position 1: re-masked this step." in panel and "It held: b" in panel and "Revealed at step 1." in panel
    assert _panel_candidates(page) == [['" b"', "50.0%", True], ['" d"', "25.0%", False]]

    page.evaluate("window.diffusionViewer.show(3)")  # masked still: dashed, and the panel remembers
    assert "was-remasked" in page.get_attribute("#tokens .tok[data-pos='1']", "class")
    page.hover("#tokens .tok[data-pos='2']")
    page.hover("#tokens .tok[data-pos='1']")
    panel = page.text_content("#inspect")
    assert "Position 1: still masked." in panel and "A re-masking at step 2 hid the token it held: b" in panel
    assert _panel_candidates(page) == [['" b"', "50.0%", True], ['" d"', "25.0%", False]]
    assert "masked again after a re-masking" in page.text_content("#legend")

    page.evaluate("window.diffusionViewer.show(4)")  # filled again: the new token's own step and candidates
    page.hover("#tokens .tok[data-pos='2']")
    page.hover("#tokens .tok[data-pos='1']")
    assert "Revealed at step 4 (this step)." in page.text_content("#inspect")
    assert _panel_candidates(page) == [['" d"', "62.5%", True]]
    assert page.errors == []


@pytest.mark.parametrize("strategy", ["remask", "remdm"])
def test_re_masked_tokens_of_a_real_run_show_what_they_were(page, tiny_checkpoint, tmp_path, strategy):
    out = tmp_path / "run"
    visualize_generation.main(
        ["--checkpoint", tiny_checkpoint, "--output-dir", str(out), "--prompt", "tom found", "--max-length", "24",
         "--steps", "8", "--strategy", strategy, "--seed", "1", "--fps", "20", "--hold", "0.05"]
    )
    states = json.loads((out / "run.json").read_text())["states"]
    hidden = [(k, i) for k, s in enumerate(states) for i, label in enumerate(s["labels"]) if label == "remasked"]
    assert hidden, f"{strategy} re-masked nothing in this run"
    page.goto((out / "view_animation.html").as_uri())
    for k, i in hidden:
        revealed_at = max(j for j in range(k) if states[j]["labels"][i] == "new")
        page.evaluate(f"window.diffusionViewer.show({k})")
        page.hover(f"#tokens .tok[data-pos='{i}']")
        panel = page.text_content("#inspect")
        assert "re-masked this step" in panel and f"Revealed at step {revealed_at}." in panel
        assert page.text_content("#inspect .shown") == page.text_content(f"#tokens .tok[data-pos='{i}']")  # the token it held
        assert len(_panel_candidates(page)) == len(states[revealed_at]["candidates"][i])
        page.mouse.move(0, 0)
    assert page.errors == []


def test_the_sample_selector_switches_between_every_sample_of_the_run(page, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    visualize_generation.main(
        ["--checkpoint", tiny_checkpoint, "--output-dir", str(out), "--max-length", "16", "--steps", "4",
         "--strategy", "random", "--num-samples", "3", "--frames-sample", "1", "--fps", "20", "--hold", "0.05"]
    )
    data = json.loads((out / "run.json").read_text())
    samples = data["samples"]
    assert len(samples) == 3 and data["sample"] == 1 and data["states"] == samples[1]["states"]
    assert len({json.dumps(s["states"][-1]["tokens"]) for s in samples}) == 3  # three different texts

    def shown_tokens():
        return page.eval_on_selector_all("#tokens .tok", "nodes => nodes.map(n => n.textContent)")

    def expected_tokens(sample, step):
        """The tokens as shown: printable ones literally, the rest (random bytes of the tiny model) as the page's escapes."""
        state = samples[sample]["states"][step]
        tokens = rendering.collapse_end_runs(state["tokens"], state["labels"], state["previous"], state["end_token"])[0]
        return [t if t.isprintable() and t.strip(" ") else None for t in tokens]

    def matches(shown, expected):
        return len(shown) == len(expected) and all(e is None or s == e for s, e in zip(shown, expected))

    page.goto((out / "view_animation.html").as_uri())
    assert page.is_visible("#sample")
    assert page.eval_on_selector_all("#sample option", "nodes => nodes.map(n => n.value)") == ["0", "1", "2"]
    assert page.input_value("#sample") == "1" and page.get_attribute("body", "data-sample") == "1"
    last = len(samples[1]["states"]) - 1
    page.evaluate(f"window.diffusionViewer.show({last})")
    assert matches(shown_tokens(), expected_tokens(1, last))

    page.select_option("#sample", "2")  # the same step of another sample
    assert page.get_attribute("body", "data-sample") == "2" and page.get_attribute("body", "data-step") == str(last)
    assert matches(shown_tokens(), expected_tokens(2, last))
    page.keyboard.press("s")  # next sample, wrapping round
    assert page.input_value("#sample") == "0" and matches(shown_tokens(), expected_tokens(0, last))
    assert not matches(shown_tokens(), expected_tokens(1, last))
    page.keyboard.press("f")
    assert page.locator("#grid .card").count() == len(samples[0]["states"])
    assert page.errors == []


def test_a_run_with_one_sample_has_no_selector(page, run_dir):
    page.goto((run_dir / "view_animation.html").as_uri())
    assert page.is_hidden("#sample-box")
    page.keyboard.press("s")  # nothing to switch to, nothing breaks
    assert page.get_attribute("body", "data-sample") == "0" and page.errors == []


def test_a_run_whose_sample_index_is_out_of_range_shows_an_error(page, tmp_path):
    state = {"tokens": ["a"], "labels": ["new"]}
    page.goto(_viewer_dir(tmp_path, {"states": [state], "samples": [{"states": [state]}], "sample": 3}).as_uri())
    assert "'sample' is 3; expected 0 to 0" in page.text_content("#error")


def _active_tokens(page):
    return page.eval_on_selector_all("#tokens .tok", "nodes => nodes.map(n => n.classList.contains('active'))")


def test_a_step_with_an_active_block_marks_exactly_its_tokens(page, tmp_path):
    tokens = ["tom", " found", " a", " red", " ball", "</s>", "</s>", "</s>"]
    first = {"step": 0, "tokens": tokens, "labels": ["fixed"] + ["masked"] * 7, "end_token": "</s>"}
    block = {"step": 1, "tokens": tokens, "labels": ["fixed", "revealed", "new", "masked", "masked", "masked", "masked", "masked"],
             "active": [False, False, True, True, True, False, False, False], "end_token": "</s>"}
    ends = {"step": 2, "tokens": tokens, "labels": ["fixed", "revealed", "revealed", "revealed", "new", "new", "new", "new"],
            "active": [False, False, False, False, True, True, False, False], "end_token": "</s>"}
    fill = dict(ends, step=3, labels=["fixed"] + ["revealed"] * 7, active=None)
    page.goto(_viewer_dir(tmp_path, {"settings": {"steps": 3, "block_size": 3}, "states": [first, block, ends, fill]}).as_uri())
    assert not page.is_visible("#error")
    assert "active block" in page.text_content("#legend")
    assert _active_tokens(page) == [False] * 8  # step 0: no block
    page.evaluate("window.diffusionViewer.show(1)")
    assert _active_tokens(page) == block["active"]
    page.evaluate("window.diffusionViewer.show(2)")  # the end-token chip is in the block: one of its run is
    assert page.eval_on_selector_all("#tokens .tok", "nodes => nodes.map(n => n.textContent)")[-1] == "</s> \u00d73"
    assert _active_tokens(page) == [False, False, False, False, True, True]
    page.evaluate("window.diffusionViewer.show(3)")
    assert _active_tokens(page) == [False] * 6
    page.keyboard.press("f")  # the frame grid marks each step's block the same way
    marked = page.eval_on_selector_all("#grid .card", "cards => cards.map(c => c.querySelectorAll('.tok.active').length)")
    assert marked == [0, 3, 2, 0]
    assert page.errors == []


def test_a_run_without_blocks_marks_nothing_and_has_no_legend_for_it(page, run_dir):
    page.goto((run_dir / "view_animation.html").as_uri())
    states = json.loads((run_dir / "run.json").read_text())["states"]
    assert all(state["active"] is None for state in states)
    page.evaluate(f"window.diffusionViewer.show({len(states) - 1})")
    assert page.locator(".tok.active").count() == 0 and "active block" not in page.text_content("#legend")


def test_the_viewer_marks_the_block_of_every_step_of_a_block_wise_run(page, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    visualize_generation.main(
        ["--checkpoint", tiny_checkpoint, "--output-dir", str(out), "--prompt", "tom", "--max-length", "16", "--steps", "6",
         "--block-size", "4", "--strategy", "random", "--fps", "20", "--hold", "0.05"]
    )
    states = json.loads((out / "run.json").read_text())["states"]
    assert sum(state["active"] is not None for state in states) == len(states) - 1  # all but the start
    page.goto((out / "view_animation.html").as_uri())
    for k, state in enumerate(states):
        page.evaluate(f"window.diffusionViewer.show({k})")
        expected = rendering.collapse_end_runs(state["tokens"], state["labels"], state["previous"], state["end_token"], state["active"])[3]
        assert _active_tokens(page) == (expected or [False] * len(_active_tokens(page)))
    assert page.errors == []

"""The Prefect UI for real: headless Chromium (Debian's, driven by playwright) fills the custom-run form of the
`stages` deployment the way a user would, the worker of `ltx2 server` runs it, and the store and the run's
parameters show what was typed. The server listens beyond loopback, so the user logs in with its auth string
first; the browser reaches that server only. `make chromium` installs the browser (no browser download)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, Request, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from storage.store import Store
from tests.flows.helpers import CLIPS, LocalServer, make_dataset, write_configs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
UI_TIMEOUT_MS = 90_000  # a page of the UI on a busy 2-core machine
RUN_TIMEOUT_S = 400  # the worker starts a Python process per run (~40 s here under load), then 4 quick stages
STAGES = ["probe", "filter", "bucket", "captions"]
NUM_FRAMES = 41  # above the config's min_frames 33: only beach.mp4 (50 frames at 25 fps) stays long enough
RUN_NAME = "ui-num-frames-41"
SUBMIT_WAIT_S = 60  # a press that sent no create_flow_run request by then is pressed again
PRESS_TIMEOUT_MS = 20_000  # a click whose button is not stable by then is made through the DOM


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `make chromium` (apt-get install chromium)")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _field(page: Page, label: str) -> Locator:
    """The form block of the parameter titled `label` (the UI ties no input to the labels of lists and unions)."""
    return page.get_by_text(label, exact=True).locator("xpath=ancestor::div[fieldset][1]")


def _open_custom_run(page: Page, url: str, auth: str) -> None:
    # The UI's entry point: it sends a browser without a saved preference to the default (V2) UI.
    _logged_in_after(page, auth, lambda: page.goto(url))
    page.get_by_role("link", name="Deployments", exact=True).click()
    page.get_by_role("link", name="stages", exact=True).click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    expect(page.get_by_label("config (Optional)")).to_have_value("config/config.json")  # the deployment's default
    page.wait_for_load_state("networkidle")  # a name typed too early was once replaced by a generated one


def _fill_form(page: Page, config: Path, storage: Path) -> None:
    typed = {"Run Name": RUN_NAME, "config (Optional)": str(config), "storage (Optional)": str(storage)}
    for label, value in typed.items():
        page.get_by_label(label, exact=True).fill(value)

    stages = _field(page, "stages (Optional)")
    stages.get_by_role("button", name=re.compile(r"^Select")).click()
    for stage in STAGES:
        page.get_by_role("option", name=stage, exact=True).click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("listbox")).to_be_hidden()

    frames = _field(page, "Num Frames (Optional)")
    frames.get_by_role("tab", name="int", exact=True).click()  # the field is `int | None`, None by default
    frames.get_by_role("spinbutton").fill(str(NUM_FRAMES))

    for label, value in typed.items():  # still what was typed: nothing reset the form meanwhile
        expect(page.get_by_label(label, exact=True)).to_have_value(value)
    for stage in STAGES:
        expect(stages.get_by_text(stage, exact=True)).to_be_visible()
    expect(frames.get_by_role("spinbutton")).to_have_value(str(NUM_FRAMES))


def _flow_run(server: LocalServer, name: str) -> dict | None:
    runs = server.http.post("/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}).json()
    return runs[0] if runs else None


def _submit(page: Page, server: LocalServer, calls: list[Request]) -> dict:
    """Press Submit and wait for the flow run to exist. On a busy machine a press was seen to validate the form
    (`/ui/schemas/validate`, 200) and ask for no run for minutes; it is pressed again only while no
    `create_flow_run` request has left the page. A late first press can still make a second run: the store's
    lease must refuse it (`_wait_finished` checks)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        if not any(r.url.endswith("/create_flow_run") for r in calls):
            _press(page.get_by_role("button", name="Submit", exact=True))
        pressed = time.monotonic()
        while time.monotonic() < min(deadline, pressed + SUBMIT_WAIT_S):
            if run := _flow_run(server, RUN_NAME):
                return run
            time.sleep(1)
    made = "\n".join(f"{r.method} {r.url} -> {_answer(r)}" for r in calls)
    pytest.fail(f"Submit made no flow run {RUN_NAME} in {RUN_TIMEOUT_S} s; the page's API calls:\n{made}")


def _press(button: Locator) -> None:
    """Click like a user; if the button never holds still for playwright's stability check (seen once on a busy
    machine: re-rendered and detached for 90 s after the viewport changed), press it through the DOM
    (`HTMLElement.click()`, which submits its form just the same)."""
    try:
        button.click(timeout=PRESS_TIMEOUT_MS)
    except PlaywrightTimeoutError:
        button.evaluate("button => button.click()")


def _answer(request: Request) -> str:
    response = request.response()
    if response is None:
        return "no answer"
    return f"{response.status} {response.text()[:1000]}" if "schemas/validate" in request.url else str(response.status)


def _log_in(page: Page, url: str, auth: str) -> None:
    """The UI's login page, as a user meets it on a server beyond loopback: the auth string as the password."""
    page.goto(url)
    password = page.get_by_placeholder("admin:pass")
    expect(password).to_be_visible()  # no page of the UI before the string
    password.fill(auth)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Logout", exact=True)).to_be_visible()


def _logged_in_after(page: Page, auth: str, load: Callable[[], object]) -> None:
    """Load a page (goto, reload) and log in again if the UI asks. Prefect's UI (3.9) validates the stored string
    while the page's first API calls already run; on a busy machine one of them can go out before the string is
    read, get 401, and the UI shows its login page although the string is right (seen 2 times in 4 runs here)."""
    load()
    password = page.get_by_placeholder("admin:pass")
    expect(page.get_by_role("button", name="Logout", exact=True).or_(password)).to_be_visible()
    if password.is_visible():
        password.fill(auth)
        page.keyboard.press("Enter")
        expect(page.get_by_role("button", name="Logout", exact=True)).to_be_visible()


def _wait_finished(server: LocalServer, name: str) -> dict:
    """The completed run named `name`, once every run of that name has ended. A Submit that the busy UI took
    twice makes two runs on one store: the second must be refused by the store's lease, and nothing else."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = server.http.post("/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}).json()
        if runs and all(r["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} for r in runs):
            done = [r for r in runs if r["state_type"] == "COMPLETED"]
            refused = [r for r in runs if r not in done]
            assert len(done) == 1, [(r["state_name"], r["state"]["message"]) for r in runs]
            assert all("LeaseHeld" in (r["state"]["message"] or "") for r in refused), refused
            return done[0]
        time.sleep(1)
    pytest.fail(f"flow run {name} did not finish within {RUN_TIMEOUT_S} s: {_flow_run(server, name)}\n"
                f"{server.log.read_text(errors='replace')[-4000:]}")


@pytest.mark.timeout(900)
def test_custom_run_from_the_ui_runs_on_the_worker_with_the_typed_parameters(server, browser):
    data = make_dataset(server.root / "videos")
    config, backend = write_configs(server.root, data)  # num_frames 33, min_frames 33: three clips would be kept
    # As SimpleTuner users write it: the config names its datasets file, so the form leaves databackend empty.
    config.write_text(json.dumps(json.loads(config.read_text()) | {"data_backend_config": str(backend)}))
    storage = server.root / "browser-store"
    shots = server.root / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # Loopback only: the UI also asks an analytics service for its settings, which must not leave the machine.
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server.url)
                  else route.abort())
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    calls: list[Request] = []  # the page's API requests: whether Submit asked for a run, and the message if not
    page.on("request", lambda r: calls.append(r) if "/api/" in r.url else None)
    _log_in(page, server.url, server.auth)
    _open_custom_run(page, server.url, server.auth)
    _fill_form(page, config, storage)
    # The whole form in one picture (a full-page shot would draw the fixed sidebar mid-page).
    page.set_viewport_size({"width": 1280, "height": page.evaluate("document.documentElement.scrollHeight")})
    page.screenshot(path=shots / "custom-run-form.png", animations="disabled")
    page.set_viewport_size({"width": 1280, "height": 900})
    _submit(page, server, calls)
    run = _wait_finished(server, RUN_NAME)
    _logged_in_after(page, server.auth, lambda: page.goto(f"{server.url}/v2/runs/flow-run/{run['id']}"))
    page.wait_for_url(re.compile(r"/runs/flow-run/"))
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    expect(page.get_by_text(f"overrides for this run: num_frames={NUM_FRAMES}")).to_be_visible()
    page.get_by_role("tab", name="Parameters", exact=True).click()
    expect(page.get_by_role("tabpanel")).to_contain_text(f'"num_frames": {NUM_FRAMES}')
    page.screenshot(path=shots / "completed-run.png", animations="disabled")
    context.close()

    # The run got what was typed, and the form's defaults for the rest.
    expected = {"config": str(config), "databackend": None, "storage": str(storage), "stages": STAGES,
                "force": [], "checkpoint": None,
                "overrides": {"resolution": None, "num_frames": NUM_FRAMES, "max_train_steps": None,
                              "lora_rank": None, "learning_rate": None}}
    assert {k: run["parameters"].get(k) for k in expected} == expected
    # The override reached the stages: min_frames rose to 41, so the 40-frame clips were rejected for it.
    store = Store.open(str(storage))
    assert store.count("samples") == len(CLIPS)
    samples = {Path(r["path"]).name: r for r in store.read("samples").to_pylist()}
    assert {name for name, r in samples.items() if r["kept"]} == {"beach.mp4"}
    for name in ("portrait.mov", "ntsc.mkv"):
        assert f"min_frames {NUM_FRAMES}" in samples[name]["reason"], samples[name]
    assert samples["beach.mp4"]["num_frames"] == NUM_FRAMES
    assert store.column_map("captions", "caption") == {samples["beach.mp4"]["sample_id"]: "clip beach"}
    assert not store.exists("text_embeds")  # only the chosen stages ran

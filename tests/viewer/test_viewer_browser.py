"""``virtual-ihc view`` in a real browser: headless Chromium driven by Selenium through Debian's chromedriver.

Three synthetic pyramidal TIFFs of one section: an H&E (pink tissue), its virtual Ki-67 (brown) at the
same resolution, and a "real" Ki-67 (blue) at half the resolution, as a registered slide scanned at
another magnification would be. The tissue is one rectangle, so the screenshots can be measured.
"""

import contextlib
import os
import shutil
import tempfile
import time

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow

GLASS = 245
HE_TISSUE = (215, 120, 175)
VIRTUAL_TISSUE = (150, 95, 50)
REAL_TISSUE = (80, 110, 200)
COLOUR_TOLERANCE = 40  # per channel: JPEG in the TIFF, JPEG tiles, browser resampling
#: slide-0 pixels: (height, width), tissue box (x0, y0, x1, y1), µm/px
SLIDE_SHAPE, TISSUE_BOX, MPP = (1200, 1600), (400, 300, 1200, 900), 0.5
WINDOW = (1500, 800)


def tissue_image(colour, scale: int = 1, seed: int = 0) -> np.ndarray:
    """Glass with a textured tissue rectangle of ``colour``, ``1 / scale`` of the full resolution."""
    rng = np.random.default_rng(seed)
    height, width = SLIDE_SHAPE[0] // scale, SLIDE_SHAPE[1] // scale
    x0, y0, x1, y1 = (value // scale for value in TISSUE_BOX)
    image = np.full((height, width, 3), GLASS, np.uint8)
    noise = rng.integers(-10, 11, (y1 - y0, x1 - x0, 1))
    image[y0:y1, x0:x1] = np.clip(np.array(colour) + noise, 0, 255)
    return image


def browser_missing_reason() -> str | None:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium Python package")
    if not missing:
        return None
    return (f"{', '.join(missing)} not installed: the browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver) and pip install selenium (requirements.txt)")


@contextlib.contextmanager
def headless_chromium():
    """A Selenium driver for the system Chromium (never a downloaded browser; no network needed)."""
    reason = browser_missing_reason()
    if reason:
        if os.environ.get("CI"):  # .ci/run installs them: a skip there would hide a broken install
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    with tempfile.TemporaryDirectory() as profile:
        for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--force-device-scale-factor=1",
                         f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile}"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver, script: str, what: str, timeout: float = 30.0):
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.1)
    state = driver.execute_script("const s = window.virtualIhcViewer; return s && "
                                  "{ready: s.ready, tiles: s.tilesLoaded, errors: s.tileErrors, error: s.error};")
    raise AssertionError(f"timed out waiting for {what}; viewer state: {state}")


FULLY_LOADED = ("window.virtualIhcViewer && virtualIhcViewer.ready && "
                "virtualIhcViewer.viewers.every(v => v.world.getItemAt(0).getFullyLoaded())")
# every pane at rest (animations done) with all tiles of its visible images loaded
SETTLED = ("virtualIhcViewer.viewers.every(v => v.viewport.getZoom(true) === v.viewport.getZoom(false) && "
           "v.viewport.getCenter(true).equals(v.viewport.getCenter(false)) && "
           "[...Array(v.world.getItemCount()).keys()].map(i => v.world.getItemAt(i))"
           ".every(item => item.getOpacity() === 0 || item.getFullyLoaded()))")
VIEWPORTS = ("virtualIhcViewer.viewers.map(v => { const c = v.viewport.getCenter(true); "
             "return [c.x, c.y, v.viewport.getZoom(true)]; })")


def settle(driver, what: str) -> list:
    """Wait until every pane is at rest twice in a row (the leader's last frame reaches the others)."""
    wait_for(driver, SETTLED, what)
    time.sleep(0.3)
    wait_for(driver, SETTLED, what)
    # two animation frames: the drawers paint the last loaded tiles before a screenshot
    driver.execute_async_script("const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done));")
    return driver.execute_script(f"return {VIEWPORTS};")


def assert_panes_in_sync(viewports, world_width: float) -> None:
    first = np.array(viewports[0])
    for index, viewport in enumerate(viewports[1:], start=1):
        assert np.abs(np.array(viewport[:2]) - first[:2]).max() < 1e-6 * world_width, (index, viewports)
        assert viewport[2] == pytest.approx(first[2], rel=1e-6), (index, viewports)


def screenshot_panes(driver, path) -> list[np.ndarray]:
    """Save a screenshot to ``path``; the RGB pixels of each pane's viewer area."""
    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    scale = image.shape[1] / driver.execute_script("return window.innerWidth;")
    rects = driver.execute_script("return [...document.querySelectorAll('.pane-viewer')].map(e => {"
                                  "const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })")
    return [image[round(top * scale):round((top + height) * scale), round(left * scale):round((left + width) * scale)]
            for left, top, width, height in rects]


def tissue_mask(pane: np.ndarray, colour) -> np.ndarray:
    return (np.abs(pane.astype(int) - np.array(colour)) <= COLOUR_TOLERANCE).all(axis=-1)


def tissue_box(pane: np.ndarray, colour) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the columns and rows holding at least half the most tissue of ``colour``."""
    mask = tissue_mask(pane, colour)
    assert mask.any(), "no tissue of the expected colour in the pane"
    per_column, per_row = mask.sum(axis=0), mask.sum(axis=1)
    columns = np.flatnonzero(per_column > 0.5 * per_column.max())
    rows = np.flatnonzero(per_row > 0.5 * per_row.max())
    return columns[0], rows[0], columns[-1] + 1, rows[-1] + 1


def assert_not_blank(pane: np.ndarray, colour) -> None:
    """The pane shows both glass and tissue of its slide's colour."""
    grey = cv2.cvtColor(pane, cv2.COLOR_RGB2GRAY)
    assert grey.std() > 10, "pane is blank"
    assert tissue_mask(pane, colour).mean() > 0.02, "pane shows no tissue of its slide's colour"
    assert (np.abs(pane.astype(int) - GLASS) <= 8).all(axis=-1).mean() > 0.02, "pane shows no glass"


def test_panes_load_tiles_follow_each_other_and_overlay(make_slide, serve_slides, tmp_path):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    slides = [make_slide("he.tif", tissue_image(HE_TISSUE), mpp=MPP),
              make_slide("virtual_ki67.tif", tissue_image(VIRTUAL_TISSUE, seed=1), mpp=MPP),
              make_slide("real_ki67.tif", tissue_image(REAL_TISSUE, scale=2, seed=2), mpp=2 * MPP)]
    colours = [HE_TISSUE, VIRTUAL_TISSUE, REAL_TISSUE]
    world_width = SLIDE_SHAPE[1] * MPP  # µm
    with serve_slides(slides) as server, headless_chromium() as driver:
        driver.get(server.url)
        wait_for(driver, FULLY_LOADED, "every pane to load its tiles")
        state = driver.execute_script("const s = virtualIhcViewer; "
                                      "return {tiles: s.tilesLoaded, errors: s.tileErrors, error: s.error};")
        assert all(count > 0 for count in state["tiles"]) and state["errors"] == 0 and state["error"] is None
        names = [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".pane-name")]
        assert names == ["he.tif", "virtual_ki67.tif", "real_ki67.tif"]

        # home view: the whole section in every pane, at the same place and scale
        assert_panes_in_sync(settle(driver, "the home view"), world_width)
        panes = screenshot_panes(driver, tmp_path / "home.png")
        boxes = []
        for pane, colour in zip(panes, colours):
            assert_not_blank(pane, colour)
            boxes.append(tissue_box(pane, colour))
        assert np.abs(np.array(boxes) - boxes[0]).max() <= 3, boxes  # real Ki-67 at half resolution too
        # home: the slide (wider than the pane's aspect) spans the pane's width
        home_tissue_width = panes[0].shape[1] * (TISSUE_BOX[2] - TISSUE_BOX[0]) / SLIDE_SHAPE[1]
        assert abs(boxes[0][2] - boxes[0][0] - home_tissue_width) <= 3, (boxes[0], home_tissue_width)
        # scale bar against the tissue measured on screen: 800 px x 0.5 µm/px = 400 µm
        microns_per_screen_pixel = (TISSUE_BOX[2] - TISSUE_BOX[0]) * MPP / (boxes[0][2] - boxes[0][0])
        bars = driver.execute_script("return [...document.querySelectorAll('.scale-bar')].map(bar => "
                                     "[bar.hidden, bar.querySelector('.scale-bar-line').style.width, "
                                     "bar.querySelector('.scale-bar-label').textContent]);")
        for hidden, width, label in bars:
            value, unit = label.split()
            microns = float(value) * (1000 if unit == "mm" else 1)
            assert not hidden and unit in ("µm", "mm") and float(value) in (1, 2, 5, 10, 20, 50, 100, 200, 500)
            assert microns / float(width.removesuffix("px")) == pytest.approx(microns_per_screen_pixel, rel=0.03)

        # a script zooms and pans the H&E pane onto the tissue's top-left corner: the others follow
        corner = (TISSUE_BOX[0] * MPP, TISSUE_BOX[1] * MPP)  # µm
        driver.execute_script("const viewport = virtualIhcViewer.viewers[0].viewport;"
                              "viewport.zoomTo(viewport.getZoom() * 3);"
                              "viewport.panTo(new OpenSeadragon.Point(arguments[0], arguments[1]));", *corner)
        viewports = settle(driver, "the panes to follow a scripted pan and zoom")
        assert viewports[0][:2] == pytest.approx(corner, abs=1e-6 * world_width)
        assert_panes_in_sync(viewports, world_width)
        panes = screenshot_panes(driver, tmp_path / "corner.png")
        for pane, colour in zip(panes, colours):
            assert_not_blank(pane, colour)
            x0, y0, _, _ = tissue_box(pane, colour)
            # the corner sits under each pane's centre
            assert abs(x0 - pane.shape[1] / 2) <= 3 and abs(y0 - pane.shape[0] / 2) <= 3, (x0, y0, pane.shape)

        # the user drags the virtual Ki-67 pane with the mouse: the others follow
        drag = (-150, -90)
        ActionChains(driver).move_to_element(driver.find_element(By.ID, "pane-1")) \
            .click_and_hold().move_by_offset(drag[0] // 3, drag[1] // 3).move_by_offset(drag[0] // 3, drag[1] // 3) \
            .move_by_offset(drag[0] // 3, drag[1] // 3).release().perform()
        dragged = settle(driver, "the panes to follow a mouse drag")
        assert_panes_in_sync(dragged, world_width)
        moved = np.array(dragged[1][:2]) - np.array(viewports[1][:2])
        # dragging the image up and left moves the view down and right (with a little flick momentum)
        assert moved[0] > 0.5 * -drag[0] * microns_per_screen_pixel / 3
        assert moved[1] > 0.5 * -drag[1] * microns_per_screen_pixel / 3

        # the opacity slider lays the virtual Ki-67 over the H&E pane, the select switches slides
        driver.execute_script("const slider = document.getElementById('overlay-opacity');"
                              "slider.value = 100; slider.dispatchEvent(new Event('input'));")
        settle(driver, "the overlay to load")
        assert driver.find_element(By.ID, "overlay-value").text == "100 %"
        overlaid = screenshot_panes(driver, tmp_path / "overlay_virtual.png")[0]
        assert tissue_mask(overlaid, VIRTUAL_TISSUE).mean() > 0.05 and tissue_mask(overlaid, HE_TISSUE).mean() < 0.01
        Select(driver.find_element(By.ID, "overlay-slide")).select_by_visible_text("real_ki67.tif")
        wait_for(driver, "virtualIhcViewer.overlay && virtualIhcViewer.viewers[0].world.getItemCount() === 2",
                 "the overlay to switch slides")
        settle(driver, "the new overlay to load")
        overlaid = screenshot_panes(driver, tmp_path / "overlay_real.png")[0]
        assert tissue_mask(overlaid, REAL_TISSUE).mean() > 0.05 and tissue_mask(overlaid, VIRTUAL_TISSUE).mean() < 0.01
        driver.execute_script("const slider = document.getElementById('overlay-opacity');"
                              "slider.value = 0; slider.dispatchEvent(new Event('input'));")
        settle(driver, "the overlay to fade out")
        assert tissue_mask(screenshot_panes(driver, tmp_path / "overlay_off.png")[0], HE_TISSUE).mean() > 0.05


def test_index_map_is_a_layer_over_the_virtual_slide_with_toggle_and_opacity(make_slide, serve_slides, tmp_path):
    """A readout of the virtual slide in 2 x 2 regions, index 0 and 1 as a checkerboard, drawn over its pane."""
    from matplotlib import colormaps
    from selenium.webdriver.common.by import By

    from virtual_ihc.readout.regions import RegionCounts, write_index_layer

    slides = [make_slide("he.tif", tissue_image(HE_TISSUE), mpp=MPP),
              make_slide("virtual_ki67.tif", tissue_image(VIRTUAL_TISSUE, seed=1), mpp=MPP)]
    height, width = SLIDE_SHAPE
    counts = RegionCounts.empty(width, height, width / 2)  # regions of 800 px: 2 x 2 over the slide
    counts.nuclei[:] = 10
    counts.positive[:] = [[0, 10], [10, 0]]
    readout = tmp_path / "readout"
    readout.mkdir()
    write_index_layer(readout, counts, 1.0, "virtual_ki67.tif", (width, height), width / 2 * MPP)
    low, high = (np.array(colormaps["turbo"](value)[:3]) * 255 for value in (0.0, 1.0))
    # glass points of the top-left (index 0) and top-right (index 1) regions, slide pixels
    points = [(200, 150), (1400, 150)]

    def colours_at(driver, name):
        pane = screenshot_panes(driver, tmp_path / f"{name}.png")[1]
        spots = driver.execute_script(
            "const item = virtualIhcViewer.viewers[1].world.getItemAt(0);"
            "return arguments[0].map(([x, y]) => { const p = item.imageToViewerElementCoordinates("
            "new OpenSeadragon.Point(x, y)); return [p.x, p.y]; });", points)
        return [pane[round(y) - 2:round(y) + 3, round(x) - 2:round(x) + 3].reshape(-1, 3).mean(axis=0)
                for x, y in spots]

    with serve_slides(slides, readout=readout) as server, headless_chromium() as driver:
        driver.get(server.url)
        wait_for(driver, FULLY_LOADED + " && !!virtualIhcViewer.indexLayer", "the panes and the index layer")
        assert driver.find_element(By.ID, "index-base").text == "virtual_ki67.tif"
        assert driver.execute_script("return virtualIhcViewer.viewers[0].world.getItemCount();") == 2  # H&E+overlay
        driver.execute_script("const slider = document.getElementById('index-opacity');"
                              "slider.value = 100; slider.dispatchEvent(new Event('input'));")
        settle(driver, "the index layer at full opacity")
        top_left, top_right = colours_at(driver, "index_on")
        assert np.abs(top_left - low).max() <= COLOUR_TOLERANCE and np.abs(top_right - high).max() <= COLOUR_TOLERANCE
        driver.find_element(By.ID, "index-toggle").click()  # off: the slide's glass again
        settle(driver, "the index layer switched off")
        assert all(np.abs(colour - GLASS).max() <= 8 for colour in colours_at(driver, "index_off"))
        driver.find_element(By.ID, "index-toggle").click()
        driver.execute_script("const slider = document.getElementById('index-opacity');"
                              "slider.value = 50; slider.dispatchEvent(new Event('input'));")
        settle(driver, "the index layer at half opacity")
        assert driver.find_element(By.ID, "index-value").text == "50 %"
        half_left, _ = colours_at(driver, "index_half")
        assert np.abs(half_left - (low + GLASS) / 2).max() <= COLOUR_TOLERANCE

// virtual-ihc view: one OpenSeadragon viewer per slide, pan and zoom kept in sync,
// a scale bar per pane from the slide's µm/px, an overlay of another slide on the first pane, and
// a readout's Ki-67 index map as a layer over its virtual slide.
"use strict";

(function () {
  // the page's state, also read by the browser test and handy in the console
  const state = {
    slides: [],
    viewers: [],
    tilesLoaded: [],   // tiles of each pane's own slide drawn so far
    tileErrors: 0,
    ready: false,      // every pane opened and aligned on the first one
    error: null,
    leader: null,      // the pane the user (or a script) moved last
    overlay: null,     // the tiled image overlaid on the first pane
    indexLayer: null,  // the readout's index map over its slide's pane (virtual-ihc view --readout)
  };
  window.virtualIhcViewer = state;

  let syncing = false;

  // --- synchronisation: a pan or zoom of one pane is replayed on the others --------------
  // Every pane shares one world coordinate system (µm, or slide widths), so the same
  // zoomTo / panTo calls, with the same reference point, move all panes alike.
  function forward(leader, apply) {
    if (syncing || !state.ready) {
      return;
    }
    syncing = true;
    state.leader = leader;
    try {
      for (const viewer of state.viewers) {
        if (viewer !== leader) {
          apply(viewer.viewport);
        }
      }
    } finally {
      syncing = false;
    }
  }

  // put every other pane exactly where the leader is now (ends any drift of the animations)
  function snapTo(leader) {
    const zoom = leader.viewport.getZoom(true);
    const centre = leader.viewport.getCenter(true);
    forward(leader, (viewport) => {
      viewport.zoomTo(zoom, null, true);
      viewport.panTo(centre, true);
    });
  }

  // --- scale bar -----------------------------------------------------------------------
  const MAX_BAR_PIXELS = 150;

  // the largest 1, 2 or 5 x 10^k µm not longer than maxMicrons
  function niceLength(maxMicrons) {
    const power = Math.pow(10, Math.floor(Math.log10(maxMicrons)));
    let length = power;
    for (const step of [2, 5]) {
      if (step * power <= maxMicrons) {
        length = step * power;
      }
    }
    return length;
  }

  function formatLength(microns) {
    const value = microns >= 1000 ? microns / 1000 : microns;
    return `${Number(value.toPrecision(3))} ${microns >= 1000 ? "mm" : "µm"}`;
  }

  function updateScaleBar(viewer, slide, bar) {
    const item = viewer.world.getItemAt(0);
    if (!slide.mpp || !item) {
      return;
    }
    // screen pixels per slide pixel at the current zoom
    const imageZoom = item.viewportToImageZoom(viewer.viewport.getZoom(true));
    const micronsPerPixel = slide.mpp / imageZoom;
    const length = niceLength(MAX_BAR_PIXELS * micronsPerPixel);
    bar.line.style.width = `${length / micronsPerPixel}px`;
    bar.label.textContent = formatLength(length);
    bar.element.hidden = false;
  }

  // --- panes ---------------------------------------------------------------------------
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function describe(slide) {
    const size = `${slide.width} × ${slide.height} px`;
    return slide.mpp ? `${Number(slide.mpp.toPrecision(3))} µm/px · ${size}` : `µm/px unknown · ${size}`;
  }

  // the pane's elements; every pane exists before any viewer measures its container
  function makePane(slide, index) {
    const pane = element("section", "pane");
    pane.dataset.index = String(index);
    const title = element("div", "pane-title");
    title.append(element("span", "pane-name", slide.name), element("span", "pane-meta", describe(slide)));
    const container = element("div", "pane-viewer");
    container.id = `pane-${index}`;
    const bar = { element: element("div", "scale-bar"), line: element("div", "scale-bar-line"),
                  label: element("span", "scale-bar-label") };
    bar.element.hidden = true;
    bar.element.append(bar.line, bar.label);
    pane.append(title, container, element("div", "pane-centre"), bar.element);
    document.getElementById("panes").append(pane);
    return { container, bar };
  }

  function makeViewer(slide, index, pane, onOpen) {
    const bar = pane.bar;
    const viewer = OpenSeadragon({
      element: pane.container,
      prefixUrl: "static/openseadragon/images/",
      tileSources: [{ tileSource: slide.dzi, width: slide.world_width }],
      showNavigator: index === 0,
      showFullPageControl: false,  // one pane full page would hide the others
      navigatorPosition: "BOTTOM_RIGHT",
      navigatorSizeRatio: 0.15,
      navigatorBackground: "#fff",
      animationTime: 0.6,
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.2,
      gestureSettingsMouse: { clickToZoom: false },
    });
    state.tilesLoaded.push(0);
    viewer.addHandler("open", () => onOpen(viewer));
    viewer.addHandler("open-failed", (event) => fail(`${slide.name}: ${event.message}`));
    viewer.addHandler("tile-loaded", (event) => {
      if (event.tiledImage === viewer.world.getItemAt(0)) {
        state.tilesLoaded[index] += 1;
      }
    });
    viewer.addHandler("tile-load-failed", () => { state.tileErrors += 1; });
    viewer.addHandler("zoom", (event) =>
      forward(viewer, (viewport) => viewport.zoomTo(event.zoom, event.refPoint, event.immediately)));
    viewer.addHandler("pan", (event) =>
      forward(viewer, (viewport) => viewport.panTo(event.center, event.immediately)));
    viewer.addHandler("animation-finish", () => {
      if (state.leader === viewer) {
        snapTo(viewer);
      }
    });
    viewer.addHandler("update-viewport", () => updateScaleBar(viewer, slide, bar));
    return viewer;
  }

  // --- overlay of another slide on the first pane --------------------------------------
  function setUpOverlay() {
    const controls = document.getElementById("overlay-controls");
    const select = document.getElementById("overlay-slide");
    const slider = document.getElementById("overlay-opacity");
    const value = document.getElementById("overlay-value");
    if (state.slides.length < 2) {
      return;
    }
    document.getElementById("overlay-base").textContent = state.slides[0].name;
    state.slides.slice(1).forEach((slide, offset) => {
      const option = element("option", "", slide.name);
      option.value = String(offset + 1);
      select.append(option);
    });
    const base = state.viewers[0];

    function showOverlay(index) {
      if (state.overlay) {
        base.world.removeItem(state.overlay);
        state.overlay = null;
      }
      const slide = state.slides[index];
      base.addTiledImage({
        tileSource: slide.dzi,
        width: slide.world_width,
        opacity: slider.value / 100,
        success: (event) => { state.overlay = event.item; },
      });
    }

    slider.addEventListener("input", () => {
      value.textContent = `${slider.value} %`;
      if (state.overlay) {
        state.overlay.setOpacity(slider.value / 100);
      }
    });
    select.addEventListener("change", () => showOverlay(Number(select.value)));
    showOverlay(1);
    controls.hidden = false;
  }

  // --- the readout's Ki-67 index map over its virtual slide ----------------------------
  function setUpIndexLayer(layer) {
    const toggle = document.getElementById("index-toggle");
    const slider = document.getElementById("index-opacity");
    const value = document.getElementById("index-value");
    document.getElementById("index-base").textContent = state.slides[layer.slide].name;
    const opacity = () => (toggle.checked ? slider.value / 100 : 0);
    state.viewers[layer.slide].addSimpleImage({
      url: layer.url,
      x: 0,
      y: 0,
      width: layer.world_width,
      opacity: opacity(),
      success: (event) => { state.indexLayer = event.item; },
    });
    const update = () => {
      value.textContent = `${slider.value} %`;
      if (state.indexLayer) {
        state.indexLayer.setOpacity(opacity());
      }
    };
    slider.addEventListener("input", update);
    toggle.addEventListener("change", update);
    document.getElementById("index-controls").hidden = false;
  }

  function fail(message) {
    state.error = message;
    document.getElementById("sync-note").textContent = message;
  }

  function start(manifest) {
    state.slides = manifest.slides;
    if (manifest.world_units !== "um") {
      const missing = state.slides.filter((slide) => !slide.mpp).map((slide) => slide.name);
      document.getElementById("sync-note").textContent =
        `no µm/px for ${missing.join(", ")}: panes are aligned by slide width`;
    }
    let opened = 0;
    const onOpen = () => {
      opened += 1;
      if (opened === state.slides.length) {
        state.ready = true;
        state.viewers[0].viewport.goHome(true);  // the others follow
        setUpOverlay();
        if (manifest.index_layer) {
          setUpIndexLayer(manifest.index_layer);
        }
      }
    };
    const panes = state.slides.map((slide, index) => makePane(slide, index));
    state.viewers = state.slides.map((slide, index) => makeViewer(slide, index, panes[index], onOpen));
  }

  fetch("slides.json")
    .then((response) => {
      if (!response.ok) {
        throw new Error(`slides.json: HTTP ${response.status}`);
      }
      return response.json();
    })
    .then(start)
    .catch((error) => fail(String(error)));
})();

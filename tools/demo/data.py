"""Captioned synthetic scenes for the demo model: one flat-coloured shape on a flat background.

A scene is five attributes: shape colour, shape (circle/square/triangle), background colour,
size (small/large) and position (a 3x3 grid: centre, left, right, top, bottom, four corners).
`render` draws it with hard edges (no anti-aliasing), so the evaluator's measurements are exact
on ground truth. `caption` words it in one of many ways, sometimes leaving out the size or the
position (so that "a red circle on a blue background" is a prompt the model knows).

Some (shape colour, shape, background) triples are held out of training (`HELD_OUT`) to test
that the model composes attributes it learned separately.

Everything is driven by a `numpy.random.Generator`, so a seed fixes the data.
"""

from dataclasses import asdict, dataclass, replace

import numpy as np

# Palette: pure, well-separated colours (minimum pairwise RGB distance 127), so that the
# evaluator can name a measured colour by its nearest palette entry.
COLOURS = {
    "red": (255, 0, 0),
    "orange": (255, 128, 0),
    "yellow": (255, 255, 0),
    "green": (0, 255, 0),
    "cyan": (0, 255, 255),
    "blue": (0, 0, 255),
    "purple": (128, 0, 128),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
# More colour words, for free colours (`sample_free_scene`) from the step where train.py names
# them (`--colour-names-from`): CSS values where CSS has the name. Left out: names within 50 of
# a palette colour (gold, beige, lavender, ivory, scarlet, cream: they would blur the palette
# words the evaluator tests) and names in the unseen colour's cell (charcoal, slate).
EXTRA_COLOURS = {
    "pink": (255, 192, 203),
    "brown": (165, 42, 42),
    "grey": (128, 128, 128),
    "olive": (128, 128, 0),
    "navy": (0, 0, 128),
    "maroon": (128, 0, 0),
    "silver": (192, 192, 192),
    "violet": (238, 130, 238),
    "indigo": (75, 0, 130),
    "tan": (210, 180, 140),
    "salmon": (250, 128, 114),
    "coral": (255, 127, 80),
    "khaki": (240, 230, 140),
    "crimson": (220, 20, 60),
    "plum": (221, 160, 221),
    "orchid": (218, 112, 214),
    "peach": (255, 218, 185),
    "mint": (152, 255, 152),
    "turquoise": (64, 224, 208),
    "chocolate": (210, 105, 30),
    "tomato": (255, 99, 71),
    "sienna": (160, 82, 45),
    "rose": (255, 0, 127),
    "amber": (255, 191, 0),
    "mustard": (255, 219, 88),
    "lilac": (200, 162, 200),
    "burgundy": (128, 0, 32),
    "rust": (183, 65, 14),
    "azure": (0, 127, 255),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
# Position name -> (column, row) on the 3x3 grid; 0 = left/top, 1 = centre, 2 = right/bottom.
POSITIONS = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "centre": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}

# Geometry, in fractions of the image side (64 px: small 14-18 px, large 28-34 px).
SIZE_RANGE = {"small": (14 / 64, 18 / 64), "large": (28 / 64, 34 / 64)}
JITTER = 2 / 64  # uniform jitter of the shape centre around its grid position


def _held_out_triples(n=30, seed=1234):
    """Fixed set of (colour, shape, background) triples never shown in training.

    Chosen so that every (colour, shape), (background, shape) and (colour, background) pair
    still occurs in training: the model has seen each piece, just not this combination.
    """
    rng = np.random.default_rng(seed)
    triples = [(c, s, b) for c in COLOURS for s in SHAPES for b in COLOURS if b != c]
    order = rng.permutation(len(triples))
    held = []
    for i in order:
        c, s, b = triples[i]
        rest = [t for t in triples if t not in held and t != (c, s, b)]
        covered = (
            any(t[0] == c and t[1] == s for t in rest)
            and any(t[2] == b and t[1] == s for t in rest)
            and any(t[0] == c and t[2] == b for t in rest)
        )
        if covered:
            held.append((c, s, b))
        if len(held) == n:
            break
    return tuple(sorted(held))


HELD_OUT = _held_out_triples()

# A colour kept out of every training image the UNet sees, for a textual-inversion colour: teal,
# 180 or more from every palette colour. `free_colour` never draws a colour the evaluator would
# name teal (one nearer to it than to every palette colour). Inversion could not teach it
# (docs/demo-model.md, "What next"); train_ti.py's concept is a held-out object instead. Kept, so that
# train.py still reproduces the shipped model.
UNSEEN_RGB = (0, 128, 128)
TRAIN_TRIPLES = tuple(
    (c, s, b) for c in COLOURS for s in SHAPES for b in COLOURS if b != c and (c, s, b) not in HELD_OUT
)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    size: str
    position: str
    extent: float  # bounding-box side, fraction of the image side
    cx: float  # bounding-box centre, fractions of the image side
    cy: float

    def attributes(self):
        return {k: v for k, v in asdict(self).items() if k in ATTRIBUTES}


ATTRIBUTES = ("colour", "shape", "background", "size", "position")


def sample_scene(rng, triples=TRAIN_TRIPLES):
    """Draws a random scene whose (colour, shape, background) is one of `triples`."""
    colour, shape, background = triples[rng.integers(len(triples))]
    size = SIZES[rng.integers(2)]
    position = list(POSITIONS)[rng.integers(len(POSITIONS))]
    return place(rng, colour, shape, background, size, position)


def free_colour(rng, avoid, margin=100, unseen=False):
    """A random RGB colour, as "#rrggbb", not one of the palette's: any colour of the cube
    except those within `margin` of the colour `avoid` (so the shape stays visible on its
    background) and, unless `unseen`, the unseen colour's cell."""
    named = np.array([*COLOURS.values(), UNSEEN_RGB], float)  # [11, 3], the unseen colour last
    while True:
        c = rng.integers(0, 256, 3)
        d = np.linalg.norm(named - c, axis=1)
        if (unseen or d.argmin() != len(named) - 1) and np.linalg.norm(c - np.array(rgb(avoid))) >= margin:
            return "#" + "".join(f"{v:02x}" for v in c)


def sample_free_scene(rng, unseen=False):
    """A training scene whose shape colour or (half the time) background is a `free_colour`,
    which `caption` leaves unnamed or names by `colour_word`. Why: a model that only ever drew the 10 palette colours
    could not draw any other, so textual inversion had nothing to find (a `<teal>` token learned
    against such a model gave speckles of green, cyan and black). Real SD draws colours it has
    no word for; with these scenes, so does the demo model. `unseen` lets the unseen colour in
    too (for the VAE, which like SD's must encode any image)."""
    scene = sample_scene(rng)
    if rng.random() < 0.5:
        return replace(scene, colour=free_colour(rng, scene.background, unseen=unseen))
    return replace(scene, background=free_colour(rng, scene.colour, unseen=unseen))


def is_named(colour):
    return not colour.startswith("#")


def colour_word(colour):
    """The word for a colour: its palette name, or for a free colour the nearest of the palette
    and `EXTRA_COLOURS`."""
    if is_named(colour):
        return colour
    words = {**COLOURS, **EXTRA_COLOURS}
    return min(words, key=lambda w: sum((a - b) ** 2 for a, b in zip(words[w], rgb(colour))))


def rgb(colour):
    """(r, g, b) of a palette name or a "#rrggbb" free colour."""
    if is_named(colour):
        return COLOURS[colour]
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def place(rng, colour, shape, background, size, position):
    """Picks the extent and the jittered centre of a scene with the given attributes."""
    lo, hi = SIZE_RANGE[size]
    extent = float(rng.uniform(lo, hi))
    col, row = POSITIONS[position]
    # Grid centres at 1/4, 1/2, 3/4, pulled inwards so a large shape stays inside the image.
    edge = max(0.25, extent / 2 + 1 / 64)
    centres = (edge, 0.5, 1 - edge)
    half = extent / 2

    def jitter(c):
        return float(np.clip(c + rng.uniform(-JITTER, JITTER), half, 1 - half))

    return Scene(colour, shape, background, size, position, extent, jitter(centres[col]), jitter(centres[row]))


def shape_mask(scene, side):
    """Boolean [side, side] mask of the shape's pixels (pixel centres at i + 0.5)."""
    coords = (np.arange(side) + 0.5) / side
    x = coords[None, :]
    y = coords[:, None]
    half = scene.extent / 2
    dx = x - scene.cx
    dy = y - scene.cy
    if scene.shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if scene.shape == "circle":
        return dx * dx + dy * dy <= half * half
    # Isosceles triangle, apex up, base = height = extent: bounding-box fill ratio 1/2.
    down = dy + half  # distance below the apex, 0..extent
    return (down >= 0) & (down <= scene.extent) & (np.abs(dx) <= down / 2)


def render(scene, side=64, palette=None):
    """uint8 [side, side, 3] RGB image of the scene (colours named in `palette`, else palette
    names or free "#rrggbb" colours)."""
    img = np.empty((side, side, 3), np.uint8)
    look = (lambda c: palette[c]) if palette else rgb
    img[:] = look(scene.background)
    img[shape_mask(scene, side)] = look(scene.colour)
    return img


# ---- captions ----

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
POSITION_WORDS = {
    "centre": ("in the centre", "in the center", "in the middle", "at the centre", "in the center of the image"),
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "at the top of the image", "near the top"),
    "bottom": ("at the bottom", "at the bottom of the image", "near the bottom"),
}
for _v in ("top", "bottom"):
    for _h in ("left", "right"):
        POSITION_WORDS[f"{_v} {_h}"] = (
            f"in the {_v} {_h} corner",
            f"at the {_v} {_h}",
            f"in the {'upper' if _v == 'top' else 'lower'} {_h} corner",
            f"at the {_v}-{_h}",
        )

TEMPLATES = (
    "{np} {pos} on {a_bg} background",
    "{np} on {a_bg} background {pos}",
    "{np} {pos}, {bg} background",
    "{np} {pos} on {bg}",
    "{np} {pos} against {a_bg} background",
    "{bg} background with {np} {pos}",
    "{a_bg} background, {np} {pos}",
    "an image of {np} {pos} on {a_bg} background",
    "{np} {pos} with {a_bg} background",
)
# For a background with no name (a free colour).
BARE_TEMPLATES = ("{np} {pos}", "an image of {np} {pos}", "{np} {pos}, plain background")


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(rng, size, head, p_drop_size=0.2):
    """"a big red circle", "red circle" or "one big red circle": `head` (e.g. "red circle")
    after a word for `size` (left out with odds `p_drop_size`), in one of three forms."""
    words = []
    if rng.random() >= p_drop_size:
        options = SIZE_WORDS[size]
        words.append(options[rng.integers(len(options))])
    np_ = " ".join([*words, head])
    form = rng.integers(3)
    if form == 0:
        return f"{_article(np_)} {np_}"
    return f"one {np_}" if form == 2 else np_


def position_phrase(rng, position, p_drop_position=0.2):
    """A wording of `position` ("in the top left corner", ...), or "" with odds `p_drop_position`."""
    if rng.random() < p_drop_position:
        return ""
    options = POSITION_WORDS[position]
    return options[rng.integers(len(options))]


def caption(rng, scene, p_drop_size=0.2, p_drop_position=0.2, name_free=False):
    """A random wording of the scene; size and position are left out with the given odds. A
    free colour is left unnamed, or with `name_free` named by `colour_word`."""
    named = (lambda c: True) if name_free else is_named
    head = f"{colour_word(scene.colour)} {scene.shape}" if named(scene.colour) else scene.shape
    np_ = noun_phrase(rng, scene.size, head, p_drop_size)
    pos = position_phrase(rng, scene.position, p_drop_position)
    templates = TEMPLATES if named(scene.background) else BARE_TEMPLATES
    template = templates[rng.integers(len(templates))]
    bg = colour_word(scene.background)
    text = template.format(np=np_, pos=pos, bg=bg, a_bg=f"{_article(bg)} {bg}")
    return " ".join(text.replace(" ,", ",").split())


def held_out_set(n, seed):
    """`n` held-out scenes with full captions (every attribute named), for evaluation."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        colour, shape, background = HELD_OUT[i % len(HELD_OUT)]
        size = SIZES[rng.integers(2)]
        position = list(POSITIONS)[rng.integers(len(POSITIONS))]
        scene = place(rng, colour, shape, background, size, position)
        out.append((scene, caption(rng, scene, 0.0, 0.0)))
    return out


if __name__ == "__main__":
    import argparse
    from pathlib import Path

    from PIL import Image

    ap = argparse.ArgumentParser(description="Render a few example scenes with captions.")
    ap.add_argument("--out", default="runs/demo/data-examples")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    print(f"{len(TRAIN_TRIPLES)} training triples, {len(HELD_OUT)} held out")
    tiles = []
    for i in range(args.n):
        scene = sample_scene(rng)
        img = render(scene)
        tiles.append(img)
        print(i, caption(rng, scene))
    grid = np.concatenate([np.concatenate(tiles[r * 4 : r * 4 + 4], 1) for r in range(args.n // 4)], 0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out / "grid.png")

"""Deterministic synthetic person-search scenes, written in the CUHK-SYSU and PRW on-disk layouts or rendered in memory.

A scene is a camera view (per-camera background gradient, texture, static clutter, illumination gain and colour
cast) with 2-6 rendered pedestrians drawn in depth order (box bottom), overlapping up to IoU 0.3, heights 18-110 px
(so some boxes hit the relaxed small-box IoU rule of the evaluation), and a foreground pole that sometimes occludes
them. Each identity is a seeded appearance record (shirt and pants colours, torso pattern with a second colour, hair
or hat colour, optional bag side and colour, height factor); some identities come in confuser pairs that share the
shirt and pattern but differ in pants or bag. Training identities have Zipf(1.1)-distributed appearance counts
clipped to [2, 20] (the long tail ProtoNorm targets); test identities are disjoint and each appears in >= 2 frames
of >= 2 cameras; about a third of the boxes are unlabelled people drawn from a pool of recurring "background
people" (pid 5555; -2 in the PRW files). One query per test identity, from a frame whose camera differs from at
least one other frame of that identity.

`scene_plan(...)` is the pure description (boxes, identities, cameras); `render_scene(plan, i)` draws image i;
`write_cuhk_sysu(root, plan)` and `write_prw(root, plan)` write the real layouts (read back by
`cvlab_shared.data.person_search`); `SyntheticSceneDataset(plan, split)` renders the same scenes from (seed, index)
without touching the disk. The identity appearance codes are in the plan for oracle-feature tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

UNLABELED = 5555
PATTERNS = ("solid", "hstripes", "vstripes", "checker")


@dataclass(frozen=True)
class Appearance:
    """A person's appearance record."""

    shirt: tuple[float, float, float]
    pants: tuple[float, float, float]
    pattern: int
    second: tuple[float, float, float]
    hair: tuple[float, float, float]
    bag: int  # 0 none, 1 left, 2 right
    bag_colour: tuple[float, float, float]
    height: float

    def code(self) -> np.ndarray:
        """A vector that identifies the appearance (oracle features in tests)."""
        return np.array(
            [*self.shirt, *self.pants, *self.second, *self.hair, *self.bag_colour, self.pattern / 3, self.bag / 2],
            dtype=np.float32,
        )


@dataclass(frozen=True)
class Person:
    """One rendered person: box xyxy (ints), pid (5555 unlabelled), appearance key, flip and jitter seed."""

    box: tuple[int, int, int, int]
    pid: int
    key: str
    flip: bool
    seed: int


@dataclass
class Scene:
    """One image of the plan."""

    index: int
    split: str
    cam: int
    persons: list[Person]


@dataclass
class ScenePlan:
    """The whole synthetic set: scenes, appearances by key ("train/3", "test/2", "bg/17"), queries, cameras."""

    seed: int
    height: int
    width: int
    scenes: list[Scene]
    appearances: dict[str, Appearance]
    queries: list[tuple[int, int]]  # (scene index, person index in that scene)
    cameras: list[dict] = field(default_factory=list)
    num_train_ids: int = 0
    num_test_ids: int = 0

    def split(self, name: str) -> list[Scene]:
        return [s for s in self.scenes if s.split == name]


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(0.05, 0.95, 3))


def _appearance(rng: np.random.Generator) -> Appearance:
    return Appearance(
        shirt=_colour(rng),
        pants=_colour(rng),
        pattern=int(rng.integers(0, 4)),
        second=_colour(rng),
        hair=_colour(rng),
        bag=int(rng.integers(0, 3)),
        bag_colour=_colour(rng),
        height=float(rng.uniform(0.9, 1.1)),
    )


def _confuser(rng: np.random.Generator, base: Appearance) -> Appearance:
    """Same shirt and pattern as `base`; different pants and bag."""
    other = _appearance(rng)
    return Appearance(
        base.shirt,
        other.pants,
        base.pattern,
        base.second,
        other.hair,
        (base.bag + 1) % 3,
        other.bag_colour,
        other.height,
    )


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _zipf_counts(n: int, s: float, low: int, high: int, rng: np.random.Generator) -> list[int]:
    counts = np.clip(np.round(high / np.arange(1, n + 1) ** s), low, high).astype(int)
    return [int(c) for c in rng.permutation(counts)]


def scene_plan(
    seed: int = 0,
    num_train_ids: int = 20,
    num_test_ids: int = 10,
    num_train_images: int = 40,
    num_test_images: int = 16,
    num_cams: int = 3,
    num_background_people: int = 50,
    image_size: tuple[int, int] = (192, 288),
    min_height: int = 18,
    max_height: int = 110,
    unlabeled_fraction: float = 0.35,
    max_persons: int = 6,
    confuser_pairs: int = 3,
    zipf_s: float = 1.1,
) -> ScenePlan:
    """The deterministic description of a synthetic person-search set (see the module docstring)."""
    if num_cams < 2:
        raise ValueError("num_cams must be at least 2 (test identities appear in two cameras)")
    rng = np.random.default_rng(seed)
    height, width = image_size
    appearances: dict[str, Appearance] = {}
    for split, n in (("train", num_train_ids), ("test", num_test_ids)):
        for pid in range(1, n + 1):
            appearances[f"{split}/{pid}"] = _appearance(rng)
        for j in range(min(confuser_pairs, n // 2)):
            a, b = 2 * j + 1, 2 * j + 2
            appearances[f"{split}/{b}"] = _confuser(rng, appearances[f"{split}/{a}"])
    for k in range(num_background_people):
        appearances[f"bg/{k}"] = _appearance(rng)
    cameras = []
    for c in range(num_cams):
        top, bottom = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
        cameras.append(
            {
                "top": top.tolist(),
                "bottom": bottom.tolist(),
                "gain": float(rng.uniform(0.7, 1.3)),
                "cast": rng.uniform(0.85, 1.15, 3).tolist(),
                "clutter": [
                    [
                        int(rng.integers(0, width - 20)),
                        int(rng.integers(0, height - 30)),
                        int(rng.integers(6, 40)),
                        int(rng.integers(10, 60)),
                        *rng.uniform(0.1, 0.9, 3).tolist(),
                    ]
                    for _ in range(4)
                ],
                "pole": int(rng.integers(10, width - 10)),
                "texture_seed": int(rng.integers(0, 2**31)),
            }
        )

    scenes: list[Scene] = []
    queries: list[tuple[int, int]] = []

    def place(count_labelled: list[tuple[int, str]], cam: int, split: str) -> Scene:
        n_unl = int(round(len(count_labelled) * unlabeled_fraction / (1 - unlabeled_fraction)))
        n_unl = max(2 - len(count_labelled), min(n_unl, max_persons - len(count_labelled)), 0)
        wanted = list(count_labelled) + [
            (UNLABELED, f"bg/{int(k)}") for k in rng.choice(num_background_people, n_unl, replace=False)
        ]
        persons: list[Person] = []
        for pid, key in wanted:
            for _ in range(100):
                h = int(round(np.exp(rng.uniform(np.log(min_height), np.log(max_height))) * appearances[key].height))
                h = int(np.clip(h, min_height, max_height))
                w = max(8, int(round(0.4 * h)))
                x1 = int(rng.integers(0, width - w))
                y2 = int(rng.integers(h, height + 1))
                box = (x1, y2 - h, x1 + w, y2)
                if all(_iou(box, p.box) <= 0.3 for p in persons):
                    break
            persons.append(Person(box, pid, key, bool(rng.random() < 0.5), int(rng.integers(0, 2**31))))
        return Scene(len(scenes), split, cam, persons)

    # training scenes: Zipf appearance counts dealt over images, at most one appearance of an identity per image
    counts = _zipf_counts(num_train_ids, zipf_s, 2, 20, rng)
    slots: list[list[tuple[int, str]]] = [[] for _ in range(num_train_images)]
    cap = max(2, int(round(max_persons * (1 - unlabeled_fraction))))
    order = sorted(range(num_train_ids), key=lambda i: -counts[i])
    for i in order:
        free = [j for j in rng.permutation(num_train_images) if len(slots[j]) < cap]
        free.sort(key=lambda j: len(slots[j]))  # least-filled images first (stable: random among equals)
        for j in free[: counts[i]]:
            slots[int(j)].append((i + 1, f"train/{i + 1}"))
    for j, labelled in enumerate(slots):
        scenes.append(place(labelled, j % num_cams, "train"))
    # test scenes: 3-5 appearances per test identity spread over cameras
    test_slots: list[list[tuple[int, str]]] = [[] for _ in range(num_test_images)]
    test_cams = [j % num_cams for j in range(num_test_images)]
    for i in range(num_test_ids):
        n = int(rng.integers(3, 6))
        free = [int(j) for j in rng.permutation(num_test_images) if len(test_slots[j]) < cap]
        free.sort(key=lambda j: len(test_slots[j]))
        chosen = free[:n]
        if len({test_cams[j] for j in chosen}) < 2:  # make sure two cameras are involved
            other = [j for j in free[n:] if test_cams[j] != test_cams[chosen[0]]]
            chosen[-1] = other[0]
        for j in chosen:
            test_slots[j].append((num_train_ids + i + 1, f"test/{i + 1}"))
    first_test = len(scenes)
    for j, labelled in enumerate(test_slots):
        scenes.append(place(labelled, test_cams[j], "test"))
    for i in range(num_test_ids):
        pid = num_train_ids + i + 1
        where = [(s.index, k) for s in scenes[first_test:] for k, p in enumerate(s.persons) if p.pid == pid]
        cams = {scenes[s].cam for s, _ in where}
        pick = next((s, k) for s, k in where if len(cams - {scenes[s].cam}) > 0 or len(cams) > 1)
        queries.append(pick)
    return ScenePlan(seed, height, width, scenes, appearances, queries, cameras, num_train_ids, num_test_ids)


def _draw_person(img: np.ndarray, person: Person, look: Appearance, rng: np.random.Generator) -> None:
    """Draw a pedestrian into `img` (H, W, 3 float) inside its box: head, patterned torso, legs, bag."""
    x1, y1, x2, y2 = person.box
    h, w = y2 - y1, x2 - x1
    jitter = lambda c: np.clip(np.asarray(c) * rng.uniform(0.9, 1.1, 3), 0, 1)
    canvas = np.zeros((h, w, 3), dtype=np.float32)
    mask = np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[0:h, 0:w]
    # head: an ellipse about 0.15 h, hair on its upper half
    cy, cx, ry, rx = 0.08 * h, w / 2, 0.08 * h + 0.5, 0.2 * w + 0.5
    head = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    canvas[head] = jitter((0.85, 0.68, 0.55))
    canvas[head & (yy < cy)] = jitter(look.hair)
    mask |= head
    # torso: about 0.35 h, patterned
    t0, t1 = int(0.16 * h), int(0.52 * h)
    torso = (yy >= t0) & (yy < t1) & (xx >= int(0.1 * w)) & (xx < w - int(0.1 * w))
    shirt, second = jitter(look.shirt), jitter(look.second)
    period = max(2, h // 12)
    stripe = {
        0: np.zeros_like(torso),
        1: ((yy - t0) // period) % 2 == 1,
        2: (xx // period) % 2 == 1,
        3: (((yy - t0) // period) + (xx // period)) % 2 == 1,
    }[look.pattern]
    canvas[torso] = shirt
    canvas[torso & stripe] = second
    mask |= torso
    # legs: about 0.45 h, two with jittered spread
    spread = int(rng.integers(0, max(1, w // 8) + 1))
    leg_w = max(1, int(0.3 * w))
    pants = jitter(look.pants)
    for left in (int(0.15 * w) - spread // 2, w - int(0.15 * w) - leg_w + spread // 2):
        lo = max(0, left)
        legs = (yy >= t1) & (xx >= lo) & (xx < min(w, lo + leg_w))
        canvas[legs] = pants
        mask |= legs
    # bag on one side
    if look.bag:
        bw, bh = max(1, int(0.22 * w)), max(1, int(0.18 * h))
        bx = 0 if look.bag == 1 else w - bw
        by = int(0.4 * h)
        canvas[by : by + bh, bx : bx + bw] = jitter(look.bag_colour)
        mask[by : by + bh, bx : bx + bw] = True
    if person.flip:
        canvas, mask = canvas[:, ::-1], mask[:, ::-1]
    region = img[y1:y2, x1:x2]
    region[mask] = canvas[mask]


def render_scene(plan: ScenePlan, index: int) -> np.ndarray:
    """Scene `index` of `plan` as an (H, W, 3) uint8 array; the same plan and index give the same pixels."""
    scene = plan.scenes[index]
    cam = plan.cameras[scene.cam]
    h, w = plan.height, plan.width
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = (1 - t) * np.asarray(cam["top"], np.float32) + t * np.asarray(cam["bottom"], np.float32)
    img = np.repeat(img, w, axis=1)
    texture = np.random.default_rng(cam["texture_seed"]).normal(0, 0.04, (h, w, 1)).astype(np.float32)
    img = img + texture
    for x, y, cw, ch, r, g, b in cam["clutter"]:
        img[y : y + ch, x : x + cw] = (r, g, b)
    for person in sorted(scene.persons, key=lambda p: p.box[3]):  # far (higher bottom edge) first
        _draw_person(img, person, plan.appearances[person.key], np.random.default_rng(person.seed))
    pole = cam["pole"]
    img[:, pole : pole + 4] = (0.25, 0.25, 0.28)  # foreground pole: occludes whoever stands behind it
    img = np.clip(img * cam["gain"] * np.asarray(cam["cast"], np.float32), 0, 1)
    pil = Image.fromarray((img * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))
    return np.asarray(pil)


def scene_name(plan: ScenePlan, scene: Scene, layout: str) -> str:
    """File name of a scene: CUHK-SYSU `s{n}.jpg`, PRW `c{cam}s1_{n:06d}.jpg` (cameras 1-based)."""
    if layout == "cuhk":
        return f"s{scene.index + 1}.jpg"
    return f"c{scene.cam + 1}s1_{scene.index + 1:06d}.jpg"


def _xywh(box: tuple[int, int, int, int]) -> np.ndarray:
    return np.array([[box[0], box[1], box[2] - box[0], box[3] - box[1]]], dtype=np.float64)


def _struct(fields: list[str], rows: list[list[object]]) -> np.ndarray:
    """A MATLAB 1 x n struct array for scipy.io.savemat."""
    out = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for j, row in enumerate(rows):
        for f, v in zip(fields, row):
            out[0, j][f] = v
    return out


def _cell(items: list[object], column: bool = True) -> np.ndarray:
    out = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for j, v in enumerate(items):
        out.flat[j] = v
    return out


def write_cuhk_sysu(root: str | Path, plan: ScenePlan, gallery_sizes: tuple[int, ...] = (5, 10)) -> Path:
    """Write the plan in the CUHK-SYSU layout under `root/CUHK-SYSU`; returns that folder.

    Image/SSM/s{n}.jpg; annotation/Images.mat ('Img': imname, nAppear, box.idlocate [x, y, w, h]); pool.mat (test
    images); test/train_test/Train.mat ('Train': cell of structs idname, nAppear, scene(imname, idlocate, ishard));
    TestG{N}.mat ('TestG{N}': Query(imname, idlocate, ishard), Gallery of N (imname, idlocate or empty, ishard),
    positives first). The query image is never in its own gallery. TestG50.mat, which the CUHK-SYSU readers take the
    queries from, is always written (its gallery is at most every other test image).
    """
    from scipy.io import savemat

    folder = Path(root) / "CUHK-SYSU"
    (folder / "Image" / "SSM").mkdir(parents=True, exist_ok=True)
    proto = folder / "annotation" / "test" / "train_test"
    proto.mkdir(parents=True, exist_ok=True)
    names = {s.index: scene_name(plan, s, "cuhk") for s in plan.scenes}
    for s in plan.scenes:
        Image.fromarray(render_scene(plan, s.index)).save(folder / "Image" / "SSM" / names[s.index], quality=95)
    img_rows = []
    for s in plan.scenes:
        boxes = _struct(["idlocate"], [[_xywh(p.box)] for p in s.persons])
        img_rows.append([np.array([names[s.index]]), np.array([[len(s.persons)]], dtype=np.float64), boxes])
    savemat(folder / "annotation" / "Images.mat", {"Img": _struct(["imname", "nAppear", "box"], img_rows)})
    test = plan.split("test")
    savemat(folder / "annotation" / "pool.mat", {"pool": _cell([np.array([names[s.index]]) for s in test])})
    train_cells = []
    for pid in range(1, plan.num_train_ids + 1):
        rows = [
            [np.array([names[s.index]]), _xywh(p.box), np.array([[0.0]])]
            for s in plan.split("train")
            for p in s.persons
            if p.pid == pid
        ]
        scene = _struct(["imname", "idlocate", "ishard"], rows)
        one = np.zeros((1, 1), dtype=[("idname", object), ("nAppear", object), ("scene", object)])
        one[0, 0]["idname"] = np.array([f"p{pid}"])
        one[0, 0]["nAppear"] = np.array([[len(rows)]], dtype=np.float64)
        one[0, 0]["scene"] = scene
        train_cells.append(one)
    savemat(proto / "Train.mat", {"Train": _cell(train_cells)})
    rng = np.random.default_rng(plan.seed + 1)
    for size in sorted(set(gallery_sizes) | {50}):
        entries = []
        for qs, qk in plan.queries:
            query = plan.scenes[qs].persons[qk]
            q_struct = _struct(
                ["imname", "idlocate", "ishard"], [[np.array([names[qs]]), _xywh(query.box), np.array([[0.0]])]]
            )
            positives, negatives = [], []
            for s in test:
                if s.index == qs:
                    continue
                hit = [p for p in s.persons if p.pid == query.pid]
                if hit:
                    positives.append([np.array([names[s.index]]), _xywh(hit[0].box), np.array([[0.0]])])
                else:
                    negatives.append([np.array([names[s.index]]), np.zeros((1, 0)), np.array([[0.0]])])
            n_neg = max(0, min(len(negatives), size - len(positives)))
            picked = [negatives[int(j)] for j in sorted(rng.choice(len(negatives), n_neg, replace=False))]
            entries.append([q_struct, _struct(["imname", "idlocate", "ishard"], positives + picked)])
        savemat(proto / f"TestG{size}.mat", {f"TestG{size}": _struct(["Query", "Gallery"], entries)})
    return folder


def write_prw(root: str | Path, plan: ScenePlan) -> Path:
    """Write the plan in the PRW layout under `root/PRW-v16.04.20`; returns that folder.

    frames/c{cam}s1_{n:06d}.jpg; annotations/<frame>.jpg.mat with 'box_new' rows [pid, x, y, w, h] (unlabelled
    pid -2); frame_train.mat 'img_index_train' and frame_test.mat 'img_index_test' (names without .jpg);
    query_info.txt lines "pid x y w h frame" with CRLF endings, as in the real file.
    """
    from scipy.io import savemat

    folder = Path(root) / "PRW-v16.04.20"
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    for s in plan.scenes:
        name = scene_name(plan, s, "prw")
        Image.fromarray(render_scene(plan, s.index)).save(folder / "frames" / name, quality=95)
        rows = [[-2 if p.pid == UNLABELED else p.pid, *_xywh(p.box)[0]] for p in s.persons]
        savemat(folder / "annotations" / f"{name}.mat", {"box_new": np.asarray(rows, dtype=np.float64)})
    for split, key in (("train", "img_index_train"), ("test", "img_index_test")):
        stems = [np.array([scene_name(plan, s, "prw")[:-4]]) for s in plan.split(split)]
        savemat(folder / f"frame_{split}.mat", {key: _cell(stems)})
    lines = []
    for qs, qk in plan.queries:
        p = plan.scenes[qs].persons[qk]
        x, y, w, h = _xywh(p.box)[0]
        lines.append(f"{p.pid} {x:g} {y:g} {w:g} {h:g} {scene_name(plan, plan.scenes[qs], 'prw')[:-4]}\r\n")
    (folder / "query_info.txt").write_bytes("".join(lines).encode())
    return folder


class SyntheticSceneDataset(Dataset):
    """The plan's scenes of one split rendered on the fly: (image (3, H, W) float in [0, 1], target, index).

    target = {"boxes": (n, 4) float xyxy, "labels": (n,) long pids (5555 unlabelled)}. Nothing is read from disk.
    """

    def __init__(self, plan: ScenePlan, split: str = "train") -> None:
        self.plan = plan
        self.scenes = plan.split(split)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int):
        scene = self.scenes[i]
        image = torch.from_numpy(render_scene(self.plan, scene.index).copy()).permute(2, 0, 1).float() / 255
        boxes = torch.tensor([p.box for p in scene.persons], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([p.pid for p in scene.persons], dtype=torch.long)
        return image, {"boxes": boxes, "labels": labels}, i

"""The head above the foramen magnum and the thorax below C7, for phantoms framed as real scans are.

A real sagittal T2 of the cervical spine shows what lies around the column: the skull base (clivus, foramen
magnum, occipital bone), the brain stem, the fourth ventricle and the cerebellum above C1, the palate, tongue
and jaw in front, and the upper thoracic column, trachea and sternum below C7. A reader that counts levels
from that anatomy (the first body below the skull is C2, whatever row it sits on; the thoracic bodies
continue below C7) has to learn it from phantoms that draw it. The challenge phantom draws only the neck the
challenge images show; these structures are added when a patient is rendered with `ExtendedAnatomy`.

Sizes are adult means with their spread (mm), from anatomy atlases: foramen magnum about 35 mm long,
clivus about 45 mm long and 10 mm thick at 20-35 degrees from the column axis, pons about 25 mm deep, a
cerebellar vermis about 50 mm tall, skull 5-9 mm thick, T1-T6 bodies a little taller than C7 under a
kyphotic curve. Shapes are simple (ellipses, bands); what matters is their order and proportions around
the column, and that every one is a separate tissue so that random contrasts (synth/contrast.py) give each
its own grey.

Coordinates are those of synth/tissue.py: s along the column (down = larger), t across it (posterior =
larger, 0 on the body centres), x lateral, in mm. The head has its own frame, tilted with the head: u up
from the plane of the foramen magnum, v posterior from its centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExtendedAnatomy:
    """One patient's head and thorax shape parameters (mm, degrees)."""

    n_thoracic: int               # bodies drawn below C7 (T1 ... Tn)
    kyphosis_deg_per_step: float  # how much the column turns forward per level below C7
    head_tilt_deg: float          # flexion (+) / extension (-) of the head on the neck
    basion_t_mm: float            # the basion's place across the column (just above the dens)
    foramen_mm: float             # foramen magnum, basion to opisthion
    clivus_deg: float             # the clivus' lean forward from the head's vertical
    clivus_mm: float
    clivus_thick_mm: float
    fossa_up_mm: float            # posterior fossa (cerebellum) semi-axes
    fossa_back_mm: float
    cranium_up_mm: float          # supratentorial semi-axes
    cranium_back_mm: float
    skull_mm: float
    scalp_mm: float
    pons_mm: float                # antero-posterior depth of the pons
    medulla_mm: float
    palate_u_mm: float            # height of the hard palate relative to the foramen magnum
    tongue_mm: float
    face_mm: float                # how far in front of the basion the face reaches
    chest_front_mm: float         # how far the chest wall moves forward below the neck
    chest_back_mm: float
    notch_levels: float           # the sternal notch, in levels below C7
    aorta_mm: float

    @staticmethod
    def draw(rng: np.random.Generator) -> "ExtendedAnatomy":
        return ExtendedAnatomy(
            n_thoracic=int(rng.integers(6, 9)), kyphosis_deg_per_step=float(rng.uniform(1.0, 4.5)),
            head_tilt_deg=float(rng.uniform(-14, 14)), basion_t_mm=float(rng.uniform(-1.0, 4.0)),
            foramen_mm=float(rng.uniform(31, 39)), clivus_deg=float(rng.uniform(20, 36)),
            clivus_mm=float(rng.uniform(38, 48)), clivus_thick_mm=float(rng.uniform(8, 13)),
            fossa_up_mm=float(rng.uniform(27, 34)), fossa_back_mm=float(rng.uniform(32, 40)),
            cranium_up_mm=float(rng.uniform(62, 75)), cranium_back_mm=float(rng.uniform(80, 92)),
            skull_mm=float(rng.uniform(5, 9)), scalp_mm=float(rng.uniform(4, 9)),
            pons_mm=float(rng.uniform(22, 28)), medulla_mm=float(rng.uniform(10, 13)),
            palate_u_mm=float(rng.uniform(-10, 4)), tongue_mm=float(rng.uniform(22, 30)),
            face_mm=float(rng.uniform(85, 105)), chest_front_mm=float(rng.uniform(30, 60)),
            chest_back_mm=float(rng.uniform(5, 25)), notch_levels=float(rng.uniform(1.5, 3.0)),
            aorta_mm=float(rng.uniform(10, 14)))


# The cranium's centre lies in front of the foramen magnum (v < 0), which sits in the back third of the skull base.
CRANIUM_V = -22.0


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipse centred (cu, cv) with semi-axes (au, av)."""
    return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2


@dataclass(frozen=True)
class HeadFrame:
    """The head's frame: (u, v) of points given in (s, t)."""

    s0: float
    t0: float
    tilt_rad: float

    def uv(self, s: np.ndarray, t: np.ndarray):
        c, k = np.cos(self.tilt_rad), np.sin(self.tilt_rad)
        ds, dt = s - self.s0, t - self.t0
        # up = (-cos, sin) and back = (sin, cos) in (s, t): both unit, orthogonal, the head turned by tilt.
        return -c * ds + k * dt, k * ds + c * dt


def head_frame(ext: ExtendedAnatomy, s_foramen: float) -> HeadFrame:
    """Origin at the middle of the foramen magnum (basion + half its length)."""
    return HeadFrame(s_foramen, ext.basion_t_mm + ext.foramen_mm / 2, np.deg2rad(ext.head_tilt_deg))


def head_outline(ext: ExtendedAnatomy, hf: HeadFrame, s: np.ndarray, t: np.ndarray):
    """(inside the head, inside its fat/skin shell's inner edge): the skull with its scalp, and the face."""
    u, v = hf.uv(s, t)
    half = ext.foramen_mm / 2
    grow = ext.skull_mm + ext.scalp_mm
    cranium = _ellipse(u, v, 75, CRANIUM_V, ext.cranium_up_mm + grow, ext.cranium_back_mm + grow) <= 1
    fossa = _ellipse(u, v, 28, half + 8, ext.fossa_up_mm + grow, ext.fossa_back_mm + grow) <= 1
    # The face: from the forehead down to the chin, in front of the skull base and the pharynx.
    face = (((u - (ext.palate_u_mm + 10)) / 70) ** 4 + ((v + half + ext.face_mm / 2) / (ext.face_mm / 2 + 6)) ** 4) <= 1
    inside = cranium | fossa | face
    core_c = _ellipse(u, v, 75, CRANIUM_V, ext.cranium_up_mm + ext.skull_mm, ext.cranium_back_mm + ext.skull_mm) <= 1
    core_f = _ellipse(u, v, 28, half + 8, ext.fossa_up_mm + ext.skull_mm, ext.fossa_back_mm + ext.skull_mm) <= 1
    core_face = (((u - (ext.palate_u_mm + 10)) / (70 - ext.scalp_mm)) ** 4
                 + ((v + half + ext.face_mm / 2) / (ext.face_mm / 2 + 6 - ext.scalp_mm)) ** 4) <= 1
    return inside, core_c | core_f | core_face


def chest_ramp(s: np.ndarray, s_c7: float) -> np.ndarray:
    """0 in the neck, rising smoothly to 1 about 5 cm below C7: where the chest wall leaves the neck's line."""
    r = np.clip((s - s_c7 - 5.0) / 45.0, 0.0, 1.0)
    return r * r * (3 - 2 * r)


def draw_face_and_chest(tissue: np.ndarray, T, s: np.ndarray, tb: np.ndarray, x: np.ndarray, inside: np.ndarray,
                        ext: ExtendedAnatomy, hf: HeadFrame, s_c7: float, s_notch: float, front_line: np.ndarray,
                        airway_front: np.ndarray, fat_mm: float) -> None:
    """The palate, tongue, nasal cavity and jaw in front of the pharynx; sternum, mediastinal fat and the
    aortic arch in front of the trachea. Drawn over the neck's muscle, under the column."""
    u, v = hf.uv(s, tb)
    half = ext.foramen_mm / 2
    vb = -half                              # the basion's v
    pal = ext.palate_u_mm
    front = inside & (v < vb - 14)
    # Nasal cavity above the hard palate (air with mucosal turbinates), sphenoid sinus behind it.
    nasal = front & (u > pal + 3) & (u < pal + 42) & (v < vb - 24) & (v > vb - ext.face_mm + 8)
    tissue[nasal] = T.AIR
    turbinate = nasal & (np.abs(np.sin((u - pal) / 5.5)) > 0.72) & (v > vb - ext.face_mm + 20)
    tissue[turbinate] = T.MUCOSA
    sinus = inside & (u > pal + 18) & (u < pal + 40) & (v < vb - 12) & (v > vb - 30)
    tissue[sinus] = T.AIR
    # Hard palate: a thin bony shelf; soft palate hanging back and down from its end.
    palate = front & (np.abs(u - pal) < 3.2) & (v < vb - 22) & (v > vb - ext.face_mm + 12)
    tissue[palate] = T.SKULL
    k = np.deg2rad(50)
    along = -(u - pal) * np.cos(k) + (v - (vb - 22)) * np.sin(k)
    across = (u - pal) * np.sin(k) + (v - (vb - 22)) * np.cos(k)
    soft = inside & (along > 0) & (along < 30) & (np.abs(across) < 4.5)
    tissue[soft] = T.MUSCLE
    # Tongue below the palate (with the oral cavity a thin gap), the jaw's bone round its front and floor.
    tongue = inside & (_ellipse(u, v, pal - 27, vb - 45, ext.tongue_mm, ext.tongue_mm + 6) <= 1) & (u < pal - 4)
    tissue[tongue] = T.TONGUE
    oral = inside & (u < pal - 3) & (u > pal - 6) & (v < vb - 25) & (v > vb - ext.face_mm + 15)
    tissue[oral] = T.AIR
    jaw_r = _ellipse(u, v, pal - 27, vb - 45, ext.tongue_mm + 14, ext.tongue_mm + 22)
    jaw = inside & (jaw_r <= 1) & (jaw_r >= 0.7) & ((v < vb - 58) | (u < pal - 45))
    tissue[jaw] = T.SKULL
    # Chest: the sternum behind the chest wall from the notch down, fat and the aortic arch behind it.
    ramp = chest_ramp(s, s_c7)
    below_notch = s > s_notch
    sternum = inside & below_notch & (tb > front_line + fat_mm + 1) & (tb < front_line + fat_mm + 13)
    tissue[sternum] = T.SKULL
    media = inside & (s > s_notch - 12) & (tb > front_line + fat_mm + 13) & (tb < airway_front - 2) & (ramp > 0.3)
    tissue[media] = T.FAT
    arch_s = s_notch + 35
    arch_t = (front_line + fat_mm + 13 + airway_front) / 2
    arch = inside & (((s - arch_s) ** 2 + (tb - arch_t) ** 2) <= ext.aorta_mm ** 2) & (ramp > 0.3)
    tissue[arch] = T.VESSEL


def draw_cranium(tissue: np.ndarray, T, s: np.ndarray, tb: np.ndarray, x: np.ndarray, inside: np.ndarray,
                 ext: ExtendedAnatomy, hf: HeadFrame) -> None:
    """Skull, clivus and everything inside the skull. Drawn last: above the foramen magnum it replaces the
    neck's structures (the canal, cord and muscle of the neck's frame end there)."""
    u, v = hf.uv(s, tb)
    half = ext.foramen_mm / 2
    b = np.array([0.0, -half])                     # basion, in (u, v)
    g = np.deg2rad(ext.clivus_deg)
    d_c = np.array([np.cos(g), -np.sin(g)])       # up the clivus: up and forward
    n_ant = np.array([-np.sin(g), -np.cos(g)])    # across it, forward
    along = (u - b[0]) * d_c[0] + (v - b[1]) * d_c[1]
    ahead = (u - b[0]) * n_ant[0] + (v - b[1]) * n_ant[1]
    top = b + ext.clivus_mm * d_c                  # dorsum sellae
    base_u = top[0] + 2.0                          # the anterior skull base's floor, in front of the clivus

    fossa = _ellipse(u, v, 28, half + 8, ext.fossa_up_mm, ext.fossa_back_mm)
    cran = _ellipse(u, v, 75, CRANIUM_V, ext.cranium_up_mm, ext.cranium_back_mm)
    behind_clivus = (ahead < 0) | (along > ext.clivus_mm)
    cavity = ((fossa <= 1) | (cran <= 1)) & (u > 0) & behind_clivus & ((v > top[1]) | (u > base_u))
    fossa_o = _ellipse(u, v, 28, half + 8, ext.fossa_up_mm + ext.skull_mm, ext.fossa_back_mm + ext.skull_mm)
    cran_o = _ellipse(u, v, 75, CRANIUM_V, ext.cranium_up_mm + ext.skull_mm, ext.cranium_back_mm + ext.skull_mm)
    shell = ((fossa_o <= 1) | (cran_o <= 1)) & ~cavity & inside & (u > -ext.skull_mm)
    foramen = (u < ext.skull_mm + 1) & (v > -half) & (v < half) & behind_clivus
    face_side = (v < top[1] - 4) & (u < base_u - 4)
    tissue[shell & ~foramen & ~face_side] = T.SKULL
    thick = ext.clivus_thick_mm * np.clip(0.45 + along / 14.0, 0, 1)
    clivus = (along > -1) & (along < ext.clivus_mm) & (ahead >= 0) & (ahead < thick) & inside
    tissue[clivus] = T.SKULL
    base = inside & (u > base_u - 6) & (u < base_u) & (v < top[1]) & (v > -ext.cranium_back_mm)
    tissue[base & ~cavity] = T.SKULL

    # Inside: CSF everywhere first (cisterns, the cisterna magna, the subarachnoid rim), then the brain.
    tissue[cavity] = T.CSF
    cerebrum = (cran <= (1 - 3.0 / ext.cranium_up_mm) ** 2) & (fossa > (1 + 4.0 / ext.fossa_up_mm) ** 2)
    tissue[cavity & cerebrum] = T.BRAIN
    white = _ellipse(u, v, 78, CRANIUM_V, ext.cranium_up_mm - 22, ext.cranium_back_mm - 26) <= 1
    tissue[cavity & cerebrum & white] = T.WHITE_MATTER
    # Brain stem: medulla, pons (bulging forward), midbrain, parallel to the clivus, through the foramen.
    la = u * d_c[0] + v * d_c[1]                  # along, from the foramen's centre
    lc = u * -n_ant[0] + v * -n_ant[1]            # across, posterior > 0
    pons_w = np.exp(-0.5 * ((la - 34) / 9.0) ** 2)
    centre = 4.0 - 5.0 * pons_w                   # the pons sits forward of the medulla's line
    half_w = ext.medulla_mm / 2 + (ext.pons_mm - ext.medulla_mm) / 2 * pons_w
    stem = (la > -ext.skull_mm - 2) & (la < 66) & (np.abs(lc - centre) < half_w) & (np.abs(x) < 16)
    tissue[cavity & stem] = T.CORD
    # The fourth ventricle behind the upper medulla and pons; the cerebellum behind it, its folia striped.
    v4 = _ellipse(la, lc, 30, centre + half_w + 4, 11, 4) <= 1
    cereb = (fossa <= (1 - 3.0 / ext.fossa_up_mm) ** 2) & (lc > centre + half_w + 3) & (u > 4)
    tissue[cavity & cereb] = T.CEREBELLUM
    folia = np.sin(np.sqrt((u - 30) ** 2 + (v - half - 10) ** 2) / 1.6) > 0.85
    tissue[cavity & cereb & folia] = T.WHITE_MATTER
    tissue[cavity & v4] = T.CSF

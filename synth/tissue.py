"""Tissue classes of the phantom at points (s, t, x) of a patient's anatomy: one function for every view."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Tuple

import numpy as np
from scipy.interpolate import PchipInterpolator

from study.levels import CANAL_POSITIONS, DISCS, MID_SAGITTAL_SLICE, VERTEBRAE

from .anatomy import PatientAnatomy, SliceAnatomy
from .extended import chest_ramp, draw_cranium, draw_face_and_chest, head_frame, head_outline


class Tissue(IntEnum):
    AIR = 0
    FAT = 1
    MUSCLE = 2
    MARROW = 3
    CORTEX = 4
    ANNULUS = 5
    NUCLEUS = 6
    NUCLEUS_DRY = 7
    HERNIATION = 8
    CSF = 9
    CORD = 10
    CORD_LESION = 11
    LIGAMENT = 12
    BRAIN = 13
    VESSEL = 14
    EPIDURAL_FAT = 15
    POSTERIOR_BONE = 16
    # Drawn only with the head and thorax (synth/extended.py).
    WHITE_MATTER = 17
    CEREBELLUM = 18
    TONGUE = 19
    SKULL = 20
    MUCOSA = 21


@dataclass(frozen=True)
class CanalProfile:
    """Canal and cord along s (slice-6 coordinates), derived once per patient from the labels."""

    space: PchipInterpolator      # AP space the canal leaves the cord (mm)
    hernia_max: np.ndarray        # per disc: max of the herniation's lateral profile across the cord

    @staticmethod
    def of(anat: PatientAnatomy) -> "CanalProfile":
        col = anat.mid.column
        s_pos = np.array([col.position_s(p) for p in CANAL_POSITIONS])
        space = np.array(anat.canal_space)
        # Above C2 the canal opens towards the foramen magnum; below C7 it keeps C7's space.
        s_knots = np.concatenate([[col.dens_top - 25, col.dens_top], s_pos, [s_pos[-1] + 40]])
        v_knots = np.concatenate([[space[0] + 7, space[0] + 3], space, [space[-1]]])
        hmax = np.array([h.max_across_cord(anat.cord_half_width_mm) if h is not None else 0.0
                         for h in anat.herniations])
        return CanalProfile(PchipInterpolator(s_knots, v_knots, extrapolate=False), hmax)

    def space_at(self, s: np.ndarray) -> np.ndarray:
        v = self.space(s)
        lo, hi = self.space.x[0], self.space.x[-1]
        v = np.where(s < lo, self.space(lo), v)
        return np.where(s > hi, self.space(hi), v)


def _superellipse(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    return np.abs(a) ** p + np.abs(b) ** p


def tissue_at(anat: PatientAnatomy, profile: CanalProfile, sl: SliceAnatomy,
              s: np.ndarray, t: np.ndarray, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Tissue class and vertebra index (1 = C2 ... 6 = C7, 0 elsewhere) at each point.

    s and t are in the frame of slice `sl` (the axial images use the mid-sagittal slice); x is lateral.
    """
    shape = s.shape
    s, t, x = s.ravel(), t.ravel(), x.ravel()
    col = sl.column
    mid = anat.mid.column
    prm = anat.params
    # Map s on this slice to the mid-slice's s through matching body edges, so that label-defined
    # structures (herniations, canal space, lesions) sit at the same level on every slice.
    knots_here = np.ravel(np.column_stack([col.top, col.bottom]))
    knots_mid = np.ravel(np.column_stack([mid.top, mid.bottom]))
    s_ref = np.interp(s, knots_here, knots_mid, left=np.nan, right=np.nan)
    s_ref = np.where(np.isnan(s_ref), s - knots_here[0] + knots_mid[0], s_ref)
    s_ref = np.where(s > knots_here[-1], s - knots_here[-1] + knots_mid[-1], s_ref)

    tissue = np.full(s.shape, Tissue.AIR, np.uint8)
    level = np.zeros(s.shape, np.int8)

    depth = col.depth_at(s)
    w_body = depth * 1.25
    # Listhesis: one body (and the discs next to it, partly) displaced across the column.
    shift = np.zeros_like(s)
    if anat.listhesis_level is not None:
        i = anat.listhesis_level
        knots = [col.bottom[i - 1], col.top[i], col.bottom[i], col.top[i + 1]]
        shift = np.interp(s, knots, [0, anat.listhesis_mm, anat.listhesis_mm, 0], left=0, right=0)
    tb = t - shift                      # t relative to the (possibly displaced) body centre line
    post_wall = depth / 2
    canal_front = post_wall + anat.pll_mm                     # anterior canal boundary without disease
    hern_e = np.zeros_like(s)
    hern_max = np.zeros_like(s)
    for j, h in enumerate(anat.herniations):
        if h is None:
            continue
        along = h.along(s_ref)
        hern_e += h.amplitude_mm * along * h.across(x)
        hern_max += h.amplitude_mm * along * profile.hernia_max[j]
    space = profile.space_at(s_ref)
    canal_back = canal_front + hern_max + space
    cord_half_ap = np.minimum(anat.cord_ap_mm, space) / 2
    cord_centre = canal_front + hern_max + space / 2
    # A flattened cord widens sideways (its area is roughly kept).
    cord_half_w = np.minimum(anat.cord_half_width_mm * np.sqrt(anat.cord_ap_mm / 2 / cord_half_ap),
                             anat.sac_half_width_mm - 0.4)
    s_fm = col.dens_top - 4.0                                  # foramen magnum
    above = s < s_fm

    # --- neck: skin/fat shell, muscle inside ---------------------------------------------------
    ext = anat.extended
    # The jaw and face widen the neck forwards above C3 (a smooth ramp, so the outline has no kink).
    ant = -(depth / 2 + prm["anterior_neck_mm"] + 24.0 / (1 + np.exp((s - col.centre[1] + 10) / 6)))
    # Outer contours follow a smooth canal line, not the diseased one, so lesions leave the skin alone.
    canal_ref = canal_front + float(np.mean(anat.canal_space))
    back = canal_ref + prm["posterior_neck_mm"]
    if ext is not None:  # below C7 the chest wall and the upper back leave the neck's line
        ramp = chest_ramp(s, col.centre[len(VERTEBRAE) - 1])
        ant = ant - ext.chest_front_mm * ramp
        back = back + ext.chest_back_mm * ramp
    t_c, t_half = (ant + back) / 2, (back - ant) / 2
    r_neck = ((tb - t_c) / t_half) ** 2 + (x / prm["neck_half_width_mm"]) ** 2
    inside = r_neck <= 1
    fat = prm["fat_mm"] / np.minimum(t_half, prm["neck_half_width_mm"])
    core = r_neck <= (1 - fat) ** 2
    if ext is not None:
        hf = head_frame(ext, col.dens_top - 4.0)
        head, head_core = head_outline(ext, hf, s, tb)
        inside, core = inside | head, core | head_core
    tissue[inside] = Tissue.FAT
    tissue[core] = Tissue.MUSCLE
    # Fat planes between posterior muscle layers.
    septum = (np.abs(tb - canal_ref - prm["muscle_septum_mm"] - 0.15 * x ** 2 / 10) < 0.7) & (np.abs(x) > 4)
    tissue[septum & inside] = Tissue.FAT
    septum2 = (np.abs(tb - canal_ref - prm["muscle_septum_mm"] * 1.8 + 0.01 * x ** 2) < 0.9) & inside
    tissue[septum2] = Tissue.FAT
    # Fat of the carotid sheath and between the anterior strap muscles.
    sheath = (((tb + depth / 2 + 6) / 9) ** 2 + ((np.abs(x) - w_body / 2 - 14) / 9) ** 2 <= 1) & inside
    tissue[sheath] = Tissue.FAT

    # --- airway and vessels ----------------------------------------------------------------------
    prevert = np.interp(s, [mid.centre[2], mid.centre[4]],
                        [prm["prevertebral_upper_mm"], prm["prevertebral_lower_mm"]])
    r_air = prm["airway_radius_mm"] * np.where(s < col.centre[3], 1.25, 1.0)
    air_c = -(depth / 2 + prevert + r_air)
    airway = ((tb - air_c) / r_air) ** 2 + (x / (r_air * 1.6)) ** 2 <= 1
    tissue[airway & inside & (s > s_fm - 30)] = Tissue.AIR
    for side in (-1, 1):
        carotid = ((tb + depth / 2 + 8) ** 2 + (x - side * (w_body / 2 + 11)) ** 2) <= 3.2 ** 2
        jugular = ((tb + depth / 2 + 4) ** 2 + (x - side * (w_body / 2 + 18)) ** 2) <= 4.2 ** 2
        vertebral = ((tb + 1.0) ** 2 + (x - side * (w_body / 2 + 5.5)) ** 2) <= 2.2 ** 2
        tissue[(carotid | jugular | vertebral) & inside] = Tissue.VESSEL

    if ext is not None:
        s_c7 = col.centre[len(VERTEBRAE) - 1]
        step = float(np.mean(np.diff(col.centre[1:len(VERTEBRAE)])))
        draw_face_and_chest(tissue, Tissue, s, tb, x, inside, ext, hf, s_c7, s_c7 + ext.notch_levels * step,
                            ant + 0 * s, air_c + r_air, prm["fat_mm"])

    # --- skull base and brain above the foramen magnum --------------------------------------------
    occiput_front = canal_back + 3 + np.clip(s_fm - s, 0, None) * 0.9
    skull = above & inside & (ext is None)  # the extended head draws its own (draw_cranium, below)
    tissue[skull & (tb > occiput_front) & (tb < occiput_front + 6)] = Tissue.POSTERIOR_BONE
    brain = skull & (tb >= canal_front - 2) & (tb <= occiput_front) & (s < s_fm - 6) \
        & (np.abs(x) < prm["neck_half_width_mm"] - 8)
    tissue[brain] = Tissue.BRAIN
    clivus = skull & (tb < canal_front - 1.5) & (tb > -depth / 2 - 4) & (s < s_fm - 3)
    tissue[clivus] = Tissue.POSTERIOR_BONE

    # --- posterior elements ---------------------------------------------------------------------
    lamina_front = canal_back + prm["epidural_fat_mm"] + prm["flavum_mm"]
    tips = []
    for i, name in enumerate(col.names):
        top, bot = (col.c2_body_top if i == 0 else col.top[i]), col.bottom[i]
        h = bot - top
        length = {0: 24, 5: 26, 6: 30}.get(i, 16) * prm["spinous_scale"]
        # Below T1 the spinous processes are long and point steeply down (the extended thorax only).
        thoracic = ext is not None and i > len(VERTEBRAE)
        steep = 0.35
        if thoracic:
            length, steep = 30.0 * prm["spinous_scale"], 0.8
        k = np.flatnonzero((s > top) & (s < bot + 0.45 * h + steep * length) & ~above)
        if k.size == 0:
            continue
        sk, tk, xk, ax = s[k], tb[k], x[k], np.abs(x[k])
        pw, lf = post_wall[k], lamina_front[k]
        depth_behind = tk - lf
        slope = steep * np.clip(depth_behind, 0, None)       # spinous processes run down and back
        in_s = (sk > top + 0.15 * h + slope) & (sk < bot + 0.2 * h + slope)
        # The lamina arches round the back of the sac; the pillars (lateral masses) are rounded blocks.
        arch = depth_behind + 0.02 * xk ** 2
        lamina = in_s & (arch > 0) & (arch < 3.0) & (ax < anat.sac_half_width_mm + 7)
        spinous = in_s & (depth_behind > 0) & (depth_behind < length) & (ax < 3.2 + 0.05 * depth_behind)
        pedicle = (sk > top + 0.1 * h) & (sk < bot - 0.35 * h) & (tk > pw - 2) & (tk < lf) \
            & (ax > anat.sac_half_width_mm + 0.8) & (ax < anat.sac_half_width_mm + 4.0)
        pillar_t = (pw + lf + 4) / 2
        pillar = (sk > top + 0.2 * h) & (sk < bot + 0.45 * h) \
            & (((tk - pillar_t) / ((lf + 4 - pw) / 2)) ** 2 + ((ax - anat.sac_half_width_mm - 9) / 5.5) ** 2 <= 1)
        transverse = (sk > top + 0.25 * h) & (sk < bot - 0.25 * h) & (tk > -2.5) & (tk < 1.5) \
            & (ax > w_body[k] / 2) & (ax < w_body[k] / 2 + 12)
        tissue[k[lamina | spinous | pedicle | pillar | transverse]] = Tissue.POSTERIOR_BONE
        facet = pillar & (np.abs(sk - (bot + 0.35 * h)) < 0.5)
        tissue[k[facet]] = Tissue.CSF
        tips.append((bot + 0.2 * h + steep * length, length))
    # The nuchal ligament: a thin dark line along the tips of the spinous processes.
    nuchal = (np.abs(x) < 3.0) & (np.abs(tb - lamina_front - 0.8 * np.mean([l for _, l in tips])) < 0.7) & ~above
    tissue[nuchal & (tissue == Tissue.MUSCLE)] = Tissue.LIGAMENT
    # Re-cut the vertebral artery through the transverse processes (foramen transversarium).
    for side in (-1, 1):
        vertebral = ((tb + 1.0) ** 2 + (x - side * (w_body / 2 + 5.5)) ** 2) <= 2.2 ** 2
        tissue[vertebral & inside] = Tissue.VESSEL

    # --- canal: flavum, epidural fat, thecal sac with CSF, cord -----------------------------------
    sac_c, sac_half = (canal_front + canal_back) / 2, (canal_back - canal_front) / 2
    # Epidural fat and the ligamentum flavum wrap the back of the sac.
    zone_half = (lamina_front - canal_front) / 2
    zone = (((tb - canal_front - zone_half) / np.maximum(zone_half, 0.3)) ** 2
            + (x / (anat.sac_half_width_mm + 1.8)) ** 2 <= 1) & (tb > canal_front - 0.2)
    tissue[zone] = Tissue.EPIDURAL_FAT
    tissue[zone & (tb > canal_back + prm["epidural_fat_mm"])] = Tissue.LIGAMENT
    sac = ((tb - sac_c) / np.maximum(sac_half, 0.3)) ** 2 + (x / anat.sac_half_width_mm) ** 2 <= 1
    indent = canal_front + hern_e
    sac &= tb > indent + 0.35
    tissue[sac] = Tissue.CSF
    cord = (((tb - cord_centre) / cord_half_ap) ** 2 + (x / cord_half_w) ** 2 <= 1) & (tb > indent + 0.35) \
        & (tb < canal_back)
    # The brainstem above the foramen magnum is wider.
    stem = above & (((tb - cord_centre) / (cord_half_ap * 1.3)) ** 2 + (x / (cord_half_w * 1.4)) ** 2 <= 1) \
        & (tb > canal_front) & (s > s_fm - 30)
    tissue[cord | stem] = Tissue.CORD
    for les in anat.lesions:
        blob = ((s_ref - les.s) / les.half_s) ** 2 + ((x - les.x) / les.half_x) ** 2 \
            + ((tb - cord_centre) / (0.6 * cord_half_ap)) ** 2 <= 1
        tissue[blob & cord] = Tissue.CORD_LESION

    # --- discs, herniations ----------------------------------------------------------------------
    for j in range(len(col.names) - 1):
        top, bot = col.bottom[j] - 1.0, col.top[j + 1] + 1.0
        c = (top + bot) / 2
        k = np.flatnonzero((s > top) & (s < bot))
        if k.size == 0:
            continue
        sk, tk, xk = s[k], tb[k], x[k]
        h = anat.herniations[j] if j < len(DISCS) else None
        bulge = h.amplitude_mm * h.along(s_ref[k]) if (h is not None and h.grade == 1) else 0.0
        d_half = depth[k] / 2 + bulge
        w_half = w_body[k] / 2 + bulge
        disc = _superellipse(tk / d_half, xk / w_half, 2.6) <= 1
        tissue[k[disc]] = Tissue.ANNULUS
        nucleus = (((sk - c) / max((bot - top) * 0.3, 0.4)) ** 2 + (tk / (depth[k] * 0.3)) ** 2
                   + (xk / (w_body[k] * 0.3)) ** 2) <= 1
        hydrated = anat.nucleus_hydrated[j] if j < len(DISCS) else True
        tissue[k[nucleus & disc]] = Tissue.NUCLEUS if hydrated else Tissue.NUCLEUS_DRY
    hern = (tb > post_wall - 0.5) & (tb < canal_front + hern_e) & (hern_e > 0.25) \
        & (np.abs(x) < anat.sac_half_width_mm + 3)
    tissue[hern] = Tissue.HERNIATION
    rim = (tb >= canal_front + hern_e) & (tb < canal_front + hern_e + 0.45) & (hern_e > 0.25) \
        & (np.abs(x) < anat.sac_half_width_mm)
    tissue[rim] = Tissue.LIGAMENT

    # --- vertebral bodies, dens, C1 arches --------------------------------------------------------
    for i, name in enumerate(col.names):
        top = col.c2_body_top if i == 0 else col.top[i]
        bot = col.bottom[i]
        c, hh = (top + bot) / 2, (bot - top) / 2
        k = np.flatnonzero((s > top) & (s < bot))
        if k.size == 0:
            continue
        sk, tk, xk = s[k], tb[k], x[k]
        # Bodies are 16-20 mm wide whatever their depth, so slices 5/7 always cut them.
        u, v, w = (sk - c) / hh, tk / (col.depth[i] / 2), xk / max(col.depth[i] * 0.62, 8.0)
        # Round in front, flat at the posterior wall (the canal side), as a cervical body is in an axial cut.
        across = np.where(v < 0, w ** 2 + v ** 2, np.abs(w) ** 3 + np.abs(v) ** 6)
        body = (u ** 4 + v ** 4 <= 1) & (across <= 1)
        tissue[k[body]] = Tissue.MARROW
        if i < len(VERTEBRAE):
            level[k[body]] = i + 1
    # C2's dens rises from the body; the C1 anterior arch sits in front of it, outside the C2 box.
    d2 = col.depth[0]
    # The dens reaches down into the body so the two read as one bone.
    dens_low = col.c2_body_top + 0.35 * (col.bottom[0] - col.c2_body_top)
    dens_c_s, dens_half = (col.dens_top + dens_low) / 2, (dens_low - col.dens_top) / 2
    k = np.flatnonzero((s > col.dens_top - 1) & (s < dens_low + 1))
    sk, tk, xk = s[k], tb[k], x[k]
    # Laterally the dens blends into C2's superior articular masses, which rise about as high, so the
    # parasagittal slices 5/7 see C2 as tall as the mid slice does (as in the real boxes).
    outline = ((sk - dens_c_s) / dens_half) ** 4 + ((tk - 0.1 * d2) / (0.32 * d2)) ** 2 + (xk / max(0.55 * d2, 7.0)) ** 4
    dens = outline <= 1
    tissue[k[dens]] = Tissue.MARROW
    level[k[dens]] = 1
    s_c1 = col.dens_top + 0.4 * (col.c2_body_top - col.dens_top)
    c1_front = ((s - s_c1) / 4.0) ** 2 + ((tb + d2 * 0.55 + 3.2) / 2.6) ** 2 + (x / 11) ** 2 <= 1
    c1_back = ((s - s_c1) / 3.6) ** 2 + ((tb - lamina_front - 2.5) / 3.2) ** 2 + (x / (anat.sac_half_width_mm + 8)) ** 2 <= 1
    tissue[c1_front | c1_back] = Tissue.POSTERIOR_BONE
    if ext is not None:
        draw_cranium(tissue, Tissue, s, tb, x, inside, ext, hf)
    return tissue.reshape(shape), level.reshape(shape)

"""A zoo of the mistakes real students of the original course make (issue 13), and of
course-style code that is correct and must keep its points.

Each :class:`ChecksEntry` is a :class:`tests.grader_zoo.zoo.Entry` (the function and
check that must fail, words its message must contain, an honest function that
keeps its points) plus what the bug may cost: ``min_points`` / ``max_points``
bound the target function's points.  Entries with ``target=None`` are correct
course-style code: every check of ``honest`` must pass.  As in :mod:`zoo`, every
submission is derived from the reference when the tests run.
"""

from __future__ import annotations

from dataclasses import dataclass

from grader.source import reference_source
from tests.grader_zoo.zoo import Entry, patch, replace_def

ONE, TWO = "one_stage", "two_stage"
H1 = "fcos_make_centerness_targets"  # cheap honest functions
H2 = "iou"


@dataclass
class ChecksEntry(Entry):
    #: Bounds on the target function's points (None: no bound).
    min_points: float | None = None
    max_points: float | None = None


# Course-style NMS: a Python loop that pops the best box and filters the rest, the way
# most students wrote it.  FAR_CORNER is the clamp bounding the intersection's
# bottom-right corner ("max" = the right one: at most the kept box's x2); KEEP says which
# of the remaining boxes stay.  (Written for this zoo in the habits of the course's code.)
COURSE_NMS = """
def nms(boxes, scores, iou_threshold=0.5):
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    left, top, right, bottom = boxes.unbind(dim=1)
    areas = (right - left) * (bottom - top)
    remaining = torch.sort(scores, descending=True, stable=True).indices
    kept = []
    while remaining.numel() > 0:
        best, remaining = remaining[0], remaining[1:]
        kept.append(best)
        if remaining.numel() == 0:
            break
        ix1 = left[remaining].clamp(min=left[best])
        iy1 = top[remaining].clamp(min=top[best])
        ix2 = right[remaining].clamp(FAR_CORNER=right[best])
        iy2 = bottom[remaining].clamp(FAR_CORNER=bottom[best])
        inter = (ix2 - ix1).clamp(min=0.0) * (iy2 - iy1).clamp(min=0.0)
        overlap = inter / (areas[remaining] + areas[best] - inter)
        remaining = remaining[KEEP]
    return torch.stack(kept).long()
"""


def course_nms(far_corner: str = "max", keep: str = "~(overlap > iou_threshold)") -> str:
    """``far_corner="max"`` is the right ``clamp(max=...)`` (the min of the x2); ``"min"`` the bug."""
    return COURSE_NMS.replace("FAR_CORNER", far_corner).replace("KEEP", keep)


# Course-style matching, one image and one level at a time, with the course's two habits
# as parameters: the comparison at the level's lower bound (LOWER) and the dtype of the
# "1e8 - area" score that is maximised to pick the smallest box (SCORE_DTYPE).
COURSE_MATCH = """
def fcos_match_locations_to_gt(locations_per_fpn_level, strides_per_fpn_level, gt_boxes):
    if gt_boxes.dim() == 3:
        images = [fcos_match_locations_to_gt(locations_per_fpn_level, strides_per_fpn_level, g) for g in gt_boxes]
        return {name: torch.stack([one[name] for one in images]) for name in locations_per_fpn_level}
    objects = gt_boxes[gt_boxes[:, 4] >= 0]
    result = {}
    for name, centres in locations_per_fpn_level.items():
        stride = strides_per_fpn_level[name]
        if len(objects) == 0:
            result[name] = gt_boxes.new_full((len(centres), 5), -1.0)
            continue
        cx = centres[:, 0:1].to(objects)
        cy = centres[:, 1:2].to(objects)
        ltrb = torch.stack([cx - objects[:, 0], cy - objects[:, 1], objects[:, 2] - cx, objects[:, 3] - cy], dim=2)  # (L, N, 4)
        lo = 0 if name == "p3" else 4 * stride
        hi = float("inf") if name == "p5" else 8 * stride
        far = ltrb.max(dim=2).values
        ok = (ltrb.min(dim=2).values > 0) & (far LOWER lo) & (far < hi)
        areas = (objects[:, 2] - objects[:, 0]) * (objects[:, 3] - objects[:, 1])
        score = ok.to(SCORE_DTYPE) * (1e8 - areas.to(SCORE_DTYPE))[None, :]
        quality, which = score.max(dim=1)
        rows = objects[which].clone()
        rows[quality <= 0] = -1.0
        result[name] = rows
    return result
"""


def course_match(lower: str = ">", score_dtype: str = "torch.float32") -> str:
    return COURSE_MATCH.replace("LOWER", lower).replace("SCORE_DTYPE", score_dtype)


# A course-style head: layers built in a loop with explicit init, and the forward
# flattening with reshape + permute.  CTR_STEM is the stem the centerness conv reads.
COURSE_HEAD = """
class FCOSPredictionNetwork(nn.Module):
    def __init__(self, num_classes, in_channels, stem_channels):
        super().__init__()
        cls_layers, box_layers = [], []
        width = in_channels
        for out in stem_channels:
            for layers in (cls_layers, box_layers):
                conv = nn.Conv2d(width, out, kernel_size=3, stride=1, padding=1)
                nn.init.normal_(conv.weight, mean=0.0, std=0.01)
                nn.init.constant_(conv.bias, 0.0)
                layers += [conv, nn.ReLU()]
            width = out
        self.stem_cls = nn.Sequential(*cls_layers)
        self.stem_box = nn.Sequential(*box_layers)
        self.pred_cls = nn.Conv2d(width, num_classes, kernel_size=3, stride=1, padding=1)
        self.pred_box = nn.Conv2d(width, 4, kernel_size=3, stride=1, padding=1)
        self.pred_ctr = nn.Conv2d(width, 1, kernel_size=3, stride=1, padding=1)
        for conv in (self.pred_cls, self.pred_box, self.pred_ctr):
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.constant_(conv.bias, 0.0)
        nn.init.constant_(self.pred_cls.bias, -math.log(99))

    def forward(self, feats_per_fpn_level):
        class_logits, boxreg_deltas, centerness_logits = {}, {}, {}
        for name, x in feats_per_fpn_level.items():
            n, _, h, w = x.shape
            cls_x, box_x = self.stem_cls(x), self.stem_box(x)
            class_logits[name] = self.pred_cls(cls_x).reshape(n, -1, h * w).permute(0, 2, 1)
            boxreg_deltas[name] = self.pred_box(box_x).reshape(n, 4, h * w).permute(0, 2, 1)
            centerness_logits[name] = self.pred_ctr(CTR_STEM).reshape(n, 1, h * w).permute(0, 2, 1)
        return [class_logits, boxreg_deltas, centerness_logits]
"""


def course_head(ctr_stem: str = "box_x") -> str:
    return COURSE_HEAD.replace("CTR_STEM", ctr_stem)


def _message_has(report, check_id: str, words: str) -> None:
    chosen = [c for c in report.checks if c.id == check_id]
    assert chosen and not chosen[0].passed and words in chosen[0].message.lower(), [(c.id, c.message) for c in chosen]


def checks_submissions() -> list[ChecksEntry]:
    ref = reference_source(ONE)
    ref2 = reference_source(TWO)
    fcos_points = 26.0
    return [
        # --- unfair or silent penalties ---------------------------------------------------
        ChecksEntry("fcos_loss_hard_codes_21_classes", ONE,
                    lambda: patch(ref, "FCOS", "F.one_hot(matched[..., 4].long().clamp(min=0), self.num_classes).float()",
                                  "F.one_hot((matched[..., 4] + 1).long(), num_classes=21)[..., 1:].float()"),
                    "FCOS", "FCOS/losses_other_num_classes", ("your loss assumes 20 classes", "use self.num_classes"),
                    honest=H1, min_points=fcos_points - 26.0 / 14 - 1e-6),
        ChecksEntry("rpn_matches_without_force_best_match", TWO,
                    lambda: patch(ref2, "RPN", "self.anchor_iou_thresholds, self.force_best_match", "self.anchor_iou_thresholds"),
                    "RPN", "RPN/losses_fixed_predictions", ("without force_best_match",), honest=H2),
        # --- wrong or missing diagnoses -----------------------------------------------------
        ChecksEntry("inference_clips_x_by_height", ONE,
                    lambda: patch(ref, "FCOS", "upper = boxes.new_tensor([width, height, width, height])",
                                  "upper = boxes.new_tensor([height, width, height, width])"),
                    "FCOS", "FCOS/inference_fixed_predictions", ("x looks clipped by the image height",), honest=H1),
        ChecksEntry("nms_max_for_the_far_corner", ONE, lambda: replace_def(ref, "nms", course_nms(far_corner="min")),
                    "nms", "nms/sanity_05", ("bottom-right corner",), honest="get_fpn_location_coords"),
        ChecksEntry("head_with_1x1_stem_convs", ONE,
                    lambda: patch(ref, "FCOSPredictionNetwork", "conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)",
                                  "conv = nn.Conv2d(channels, out_channels, kernel_size=1)"),
                    "FCOSPredictionNetwork", "FCOSPredictionNetwork/init", ("stem_cls.0 1x1 conv",), honest=H1),
        ChecksEntry("head_with_1x1_stem_convs_forward", ONE,
                    lambda: patch(ref, "FCOSPredictionNetwork", "conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)",
                                  "conv = nn.Conv2d(channels, out_channels, kernel_size=1)"),
                    "FCOSPredictionNetwork", "FCOSPredictionNetwork/forward_same_weights",
                    # hidden messages name the layer and its shape, not the expected shape (rubric gates)
                    ("stem_cls.0.weight has shape [16, 16, 1, 1]",), honest=H1),
        ChecksEntry("course_head_centerness_on_the_class_stem", ONE,
                    lambda: replace_def(ref, "FCOSPredictionNetwork", course_head("cls_x")),
                    "FCOSPredictionNetwork", "FCOSPredictionNetwork/forward_same_weights", ("box stem",), honest=H1,
                    # the init check (2 points) still counts; the shape checks are gated on the
                    # forward check this bug fails (grader/gates.py), so they do not
                    min_points=2.0 - 1e-6, max_points=2.0 + 1e-6),
        ChecksEntry("match_exclusive_lower_bound", ONE,
                    lambda: patch(ref, "fcos_match_locations_to_gt", "(farthest >= lower[:, None])", "(farthest > lower[:, None])"),
                    "fcos_match_locations_to_gt", "fcos_match_locations_to_gt/ties", ("lower bound",), honest=H1),
        ChecksEntry("match_ignores_force_best_match", TWO,
                    lambda: patch(ref2, "rcnn_match_anchors_to_gt", "if force_best_match:", "if False:"),
                    "rcnn_match_anchors_to_gt", "rcnn_match_anchors_to_gt/force_best_match", ("force_best_match is ignored",),
                    honest=H2),
        ChecksEntry("pool_roi_level_order_visible", TWO,
                    lambda: patch(ref2, "pool_roi_features", "return pooled", "return pooled[torch.sort(levels, stable=True).indices]"),
                    "pool_roi_features", "pool_roi_features/sanity", ("grouped by fpn level",), honest=H2),
        # --- bugs no check saw --------------------------------------------------------------
        ChecksEntry("apply_deltas_background_gets_first_location", ONE,
                    lambda: patch(ref, "fcos_apply_deltas_to_locations",
                                  "output_boxes = torch.cat([locations - distances[..., :2], locations + distances[..., 2:]], dim=-1)",
                                  "output_boxes = torch.cat([locations - distances[..., :2], locations + distances[..., 2:]], dim=-1)\n"
                                  "    background = (deltas == -1).all(dim=-1)\n"
                                  "    if bool(background.any()):\n"
                                  "        first = locations.expand_as(deltas[..., :2])[background][0]\n"
                                  "        output_boxes = torch.where(background[..., None], torch.cat([first, first]), output_boxes)"),
                    "fcos_apply_deltas_to_locations", "fcos_apply_deltas_to_locations/background_rows",
                    ("first background location",), honest=H1),
        ChecksEntry("match_course_float32_area_score", ONE, lambda: replace_def(ref, "fcos_match_locations_to_gt", course_match(">=")),
                    "fcos_match_locations_to_gt", "fcos_match_locations_to_gt/near_equal_areas", ("1e8 - area",), honest=H1),
        ChecksEntry("match_course_code_as_given", ONE, lambda: replace_def(ref, "fcos_match_locations_to_gt", course_match(">")),
                    "fcos_match_locations_to_gt", "fcos_match_locations_to_gt/near_equal_areas", ("1e8 - area",), honest=H1,
                    expect=lambda report: _message_has(report, "fcos_match_locations_to_gt/ties", "lower bound")),
        ChecksEntry("nms_drops_nan_iou", ONE, lambda: replace_def(ref, "nms", course_nms(keep="overlap <= iou_threshold")),
                    "nms", "nms/zero_area", ("nan",), honest="get_fpn_location_coords"),
        ChecksEntry("rpn_samples_over_the_flattened_batch", TWO,
                    lambda: patch(ref2, "RPN", "sample_rpn_training(matched, self.batch_size_per_image",
                                  "sample_rpn_training(matched.reshape(-1, 5), self.batch_size_per_image"),
                    "RPN", "RPN/losses_sampled_per_image", ("per image",), honest=H2),
        # --- correct course-style code keeps its points ------------------------------------
        ChecksEntry("course_style_nms_correct", ONE, lambda: replace_def(ref, "nms", course_nms()), None, honest="nms"),
        ChecksEntry("course_style_head_correct", ONE, lambda: replace_def(ref, "FCOSPredictionNetwork", course_head()),
                    None, honest="FCOSPredictionNetwork"),
        ChecksEntry("course_style_match_correct", ONE,
                    lambda: replace_def(ref, "fcos_match_locations_to_gt", course_match(">=", "torch.float64")),
                    None, honest="fcos_match_locations_to_gt"),
    ]

//! COCO's category ids.

/// The 80 COCO detection classes in their contiguous order (0..79, as detectors index their
/// logits) to COCO's sparse category ids (person 1 … toothbrush 90): YOLACT's
/// `COCO_LABEL_MAP` keys, CenterNet's `_valid_ids`, TF.js CenterNet's labels.
pub const COCO_CATEGORY_IDS: [i64; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
];

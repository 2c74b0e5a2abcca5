//! Hot vision ops (RoIAlign, NMS, box coding, anchors, mask pasting, YOLACT assembly, heatmap peaks), matched to torchvision.

"""Stage 1: YOLO finds C2-C7 and the discs on sagittal slices and assigns every level."""

#!/usr/bin/env bash
# Retrain every shipped model with the project's own training scripts, then copy each best model
# here (without optimizer state) with its config.json, training log and this command.
#
#   REAL_CT=/path/to/real_ct bash trained_models/make_models.sh            # all models
#   REAL_CT=/path/to/real_ct bash trained_models/make_models.sh unet2d_noise0.05
#
# REAL_CT holds the public real CT used for the 2D models (see trained_models/README.md for the
# datasets, their licences and how to get them):
#   $REAL_CT/slices_lidc_chest_dicom   20 LIDC-IDRI chest slices (DICOM, HU)
# The TCIA Colorectal-Liver-Metastases series is held out: it is the unseen real test volume.
# The MSD lung PNG slices are not used as targets: their own noise (sigma about 0.04-0.08 in their
# 8-bit window) is close to the training noise, and a model trained on them keeps grain in
# (studies/real_ct_recipes.py measured it); window augmentation makes the 8-bit views instead.
# The per-level 3D models train on the embedded phantoms only; the blind ones (REAL_3D below) also on
# the contiguous low-dose training volumes. unet3d_blind trains in float32: under mixed_bfloat16 it
# collapsed three times (a constant output, or the identity after a few epochs).
# Every training runs a fixed number of epochs (no time limit), so the models do not depend on the
# machine's speed or load.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${REAL_CT:?set REAL_CT to the real_ct folder (slices_lidc_chest_dicom and the datasets of data/real_ct_split.json)}"
RUNS=results/shipped
python3 -m utils.phantom

# Real slices mixed with the phantoms, each half of every epoch (--balance-data); half the
# samples are seen through a narrow 8-bit window.
MIXED_2D=(--data data/phantom/train "$REAL_CT/slices_lidc_chest_dicom" --balance-data
          --validation-data data/phantom/val --window-augmentation 0.5)

# The real-CT recipe: phantoms plus every real training volume of the patient-level split
# (data/real_ct_split.json; its test patients are never read): the clean slices and series, and the
# 18 low-dose training volumes, whose own noise (about 0.015-0.019 on the window's scale) stays in
# their targets; they are the only contiguous real volumes, which the neighbour prior needs. Window
# augmentation, and a random in-plane zoom of 0.3-1.6 so that pixels of about 0.5-3 mm are seen.
# Every volume gives 8 samples an epoch (most real volumes are single slices).
REAL_2D=(--data data/phantom/train $(python3 -m utils.real_ct_split train --root "$REAL_CT" --kinds clean lowdose)
         --samples-per-volume 8 --validation-data data/phantom/val --window-augmentation 0.5 --zoom-range 0.3 1.6)
# The real-volume 3D recipe: phantoms plus the 18 contiguous low-dose training volumes of the split
# (3.27 mm slices; their own noise of about 0.016 stays in their targets), 24 patches of each a
# epoch, the in-plane zoom of the 2D recipe (pixels of about 0.6-3 mm).
REAL_3D=(--data data/phantom/train $(python3 -m utils.real_ct_split train --root "$REAL_CT" --kinds lowdose)
         --samples-per-volume 24 --validation-data data/phantom/val --zoom-range 0.3 1.5)
# The 2D low-dose model trains on the clean volumes only: the real low-dose volumes' own noise (about
# 20 HU) is as strong as the quarter-dose noise added, and a target that keeps it teaches to keep it.
# The 3D one has no clean real volume to learn from (the one contiguous clean series is the test volume),
# so it starts from resprunet3d_blind (which knows the real volumes) and is fine-tuned on REAL_3D for
# ct_lowdose noise. Its doses are log-uniform in 0.02-0.5; at the median, 0.1, the noise added (about 47 HU on
# the clean test slices of studies/lowdose_quality.py) is over twice the volumes' own (about 20 HU).
REAL_2D_CLEAN=(--data data/phantom/train $(python3 -m utils.real_ct_split train --root "$REAL_CT" --kinds clean)
               --samples-per-volume 8 --validation-data data/phantom/val --window-augmentation 0.5 --zoom-range 0.3 1.6)

declare -A COMMANDS=(
  [unet2d_blind]="Train_model_denoising2D.py --model unet --filters 24 --depth 3 --noise 0.05 --noise-range 0.01 0.12 --epochs 100"
  [resprunet2d_blind]="Train_model_denoising2D.py --model resprunet --filters 24 --depth 3 --noise 0.05 --noise-range 0.01 0.12 --epochs 100"
  [unet2d_lowdose]="Train_model_denoising2D.py --model unet --filters 24 --depth 3 --noise-model ct_lowdose --dose 0.25 --dose-range 0.02 0.5 --epochs 120 --lr-schedule cosine"
  [convnet2d_noise0.02]="Train_model_denoising2D.py --model convnet --filters 64 --noise 0.02 --epochs 25"
  [convnet2d_noise0.05]="Train_model_denoising2D.py --model convnet --filters 64 --noise 0.05 --epochs 25"
  [unet2d_noise0.02]="Train_model_denoising2D.py --model unet --noise 0.02 --epochs 480"
  [unet2d_noise0.05]="Train_model_denoising2D.py --model unet --noise 0.05 --epochs 480"
  [unet3d_noise0.05]="Train_model_denoising3D.py --model unet --filters 16 --noise 0.05"
  [resprunet3d_noise0.05]="Train_model_denoising3D.py --model resprunet --noise 0.05"
  [resprunet3d_blind]="Train_model_denoising3D.py --model resprunet --noise 0.05 --noise-range 0.01 0.12"
  [unet3d_blind]="Train_model_denoising3D.py --model unet --filters 16 --noise 0.05 --noise-range 0.01 0.12 --precision float32"
  [resprunet3d_lowdose]="Train_model_denoising3D.py --model resprunet --noise-model ct_lowdose --dose 0.25 --dose-range 0.02 0.5 --epochs 10 --learning-rate 3e-4 --lr-schedule cosine --init-model trained_models/resprunet3d_blind.keras"
)
ORDER=(unet2d_blind unet2d_lowdose resprunet2d_blind resprunet3d_blind resprunet3d_lowdose unet3d_blind unet2d_noise0.05 convnet2d_noise0.05 resprunet3d_noise0.05 unet3d_noise0.05 unet2d_noise0.02 convnet2d_noise0.02)
[ $# -gt 0 ] && ORDER=("$@")

for name in "${ORDER[@]}"; do
  read -r -a command <<< "${COMMANDS[$name]:?unknown model $name; choose from ${!COMMANDS[*]}}"
  extra=()
  [[ $name == *2d_noise* ]] && extra=("${MIXED_2D[@]}")
  [[ $name == *2d_blind* ]] && extra=("${REAL_2D[@]}")
  [[ $name == *2d_lowdose* ]] && extra=("${REAL_2D_CLEAN[@]}")
  [[ $name == *3d_blind* || $name == *3d_lowdose* ]] && extra=("${REAL_3D[@]}")
  run=(python3 "${command[@]}" "${extra[@]}" --time-limit-minutes 0 --out "$RUNS/$name")
  echo "== $name: ${run[*]}"
  "${run[@]}"
  # The command is recorded with $REAL_CT unexpanded: where the data lives is the reader's own business.
  python3 -m models.export "$RUNS/$name" "trained_models/$name.keras" --command "${run[*]//$REAL_CT/\$REAL_CT}"
done

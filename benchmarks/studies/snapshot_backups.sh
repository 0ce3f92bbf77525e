#!/usr/bin/env bash
# Copies a running fit's BackupAndRestore weights each time its backup moves on,
# as DEST/NAME_<epoch>_<batch>.weights.h5 (the input of trajectory_average.py).
# Usage: bash benchmarks/studies/snapshot_backups.sh DEST NAME=BACKUP_DIR [NAME=BACKUP_DIR ...]
# Runs until killed. Keras writes the weights before the metadata, and a copy is
# kept only if the metadata did not change while it was taken.
set -u
dest=$1; shift
mkdir -p "$dest"
position_of() { tr -dc '0-9,' < "$1/training_metadata.json" | tr ',' '_'; }
while true; do
  for pair in "$@"; do
    name=${pair%%=*}; src=${pair#*=}
    [ -f "$src/training_metadata.json" ] || continue
    position=$(position_of "$src")
    out="$dest/${name}_$position.weights.h5"
    [ -f "$out" ] && continue
    cp "$src/latest.weights.h5" "$out.tmp"
    if [ "$position" == "$(position_of "$src")" ]; then
      mv "$out.tmp" "$out"
    else
      rm -f "$out.tmp"
    fi
  done
  sleep 15
done

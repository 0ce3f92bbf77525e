"""Labels for results files and their reading, shared by `results_table.py`,
`plot_results.py` and `seed_summary.py`.

Kept free of TensorFlow imports so that the table and plot scripts start fast.
"""

import json


def sigma_scales(args: dict) -> tuple:
    """The sigma scale of an RSO run at its first and last cycle.

    Files written before `--sigma-scale` existed started at 1x; before
    `--final-fraction` existed they ended at the paper's 0.1x.
    """
    start = float(args.get("sigma_scale", 1.0))
    return start, start * float(args.get("final_fraction", 0.1))


def rso_settings(args: dict) -> str:
    """The RSO settings as a label, e.g. "sigma 2→1x, balanced"."""
    start, end = sigma_scales(args)
    label = f"sigma {start:g}\u2192{end:.2g}x"
    if args.get("remeasure_sigma"):
        label += ", re-measured"
    if args.get("balance_sigma"):
        label += ", balanced"
    if args.get("output_passes"):
        label += f", +{args['output_passes']} output passes"
    if args.get("step_rule", "argmin") != "argmin":
        label += f", {args['step_rule']} step"
    if args.get("order", "output_to_input") != "output_to_input":
        label += f", {args['order'].replace('_', ' ')} order"
    return label


def is_paper_settings(args: dict) -> bool:
    """Whether a run used the paper's settings: sigma 1x annealed to 0.1x,
    measured once, a cycle that visits every weight once from the output
    to the input, and the argmin of w - dw, w, w + dw."""
    return (sigma_scales(args) == (1.0, 0.1) and not args.get("remeasure_sigma")
            and not args.get("balance_sigma") and not args.get("output_passes")
            and args.get("step_rule", "argmin") == "argmin"
            and args.get("order", "output_to_input") == "output_to_input")


def read_results(paths) -> list:
    """The results dictionaries (examples' `--results` JSON files) in `paths`,
    in order."""
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    return results

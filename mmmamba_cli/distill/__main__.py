"""`python -m mmmamba_cli.distill ...` = `mmmamba distill ...`, for launchers that want a module
(`accelerate launch --multi_gpu --num_processes 2 -m mmmamba_cli.distill --stage 1 ...`)."""
from ..cli.distill import main

main()

"""Reports: the summary, rows, model cards, mteb results folder, chart, rescore."""

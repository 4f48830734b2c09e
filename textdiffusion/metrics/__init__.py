"""Metrics: likelihood (the ELBO bound, causal and judge perplexity), text metrics, tables and the evaluation report."""

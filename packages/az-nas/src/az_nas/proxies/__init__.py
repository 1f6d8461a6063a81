"""Zero-cost proxies: AZ-NAS's four (expressivity, progressivity, trainability, complexity) and baselines."""

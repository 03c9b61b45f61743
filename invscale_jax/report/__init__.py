"""Postprocessing: scored records -> per-example metrics -> curves -> shape labels -> report.

Modules, in the order data flows through them:

  load        RESULTS directories -> validated runs (one per family/model/task/variant)
  external    external result CSVs -> points drawn beside the runs
  metrics     records of one run -> per-example metric values (prize definitions)
  bootstrap   seeded, vectorised resampling of means over examples
  intervals   closed-form 95% intervals for one run's headline number (`invscale results`)
  curves      per-model points and paired adjacent-size steps, per task and averaged
  shapes      the shape rule (Holm-corrected paired bootstrap) -> labels
  coverage    what is missing, class balance
  analysis    the pipeline above, as one pure function
  export, tables, markdown, html, plots   outputs; output writes them atomically
  commands    `invscale report`
  browse      `--open`: the report in a browser (a gs:// one copied to the cache first)
"""

# The R side of benchmarks/study_throughput.py: the same replicates looped in lme4.
# Reads a CSV with the design's columns and one response column per replicate
# (y1, y2, ...), fits the reference model once, then refits it to every response
# with lme4's refit() (as simr does), taking the numbers a study table needs
# (fixed effects with standard errors, variance components, logLik, singularity).
# Prints "R lme4 refit loop: <ms> ms per replicate" and, as a check that the
# replicates are the same ones, the mean of the time estimates.
#     Rscript benchmarks/study_throughput.R responses.csv
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
ys <- grep("^y[0-9]+$", names(d), value = TRUE)
d$hospital_id <- factor(d$hospital_id)
d$patient_id <- factor(d$patient_id)
d$bp <- d[[ys[1]]]
template <- lmer(bp ~ time + (1 | hospital_id) + (1 | patient_id), data = d, REML = TRUE)
slope <- numeric(length(ys))
start <- proc.time()[["elapsed"]]
for (i in seq_along(ys)) {
  m <- refit(template, d[[ys[i]]])
  cf <- coef(summary(m))
  vc <- as.data.frame(VarCorr(m))
  ll <- logLik(m)
  sing <- isSingular(m)
  slope[i] <- cf["time", "Estimate"]
}
elapsed <- proc.time()[["elapsed"]] - start
cat(sprintf("R lme4 refit loop: %.1f ms per replicate (lme4 %s, %d replicates)\n",
            1000 * elapsed / length(ys), packageVersion("lme4"), length(ys)))
cat(sprintf("R mean time estimate: %.10g\n", mean(slope)))

# Reference power of a study made from a pilot fit (glmm_steps.pilot, outcome_model):
# Orthodont's distance ~ poly(age, 2) * Sex + (1 + scale(age) | Subject), REML, with the
# effect to power for set as simr's fixef<- would set it (poly(age, 2)2:SexMale = 1.5, in
# the pilot's own orthogonal basis), extended as simr's extend would: 90 subjects, ages
# 8..16. The rows (Subject, age, Sex) are the design's own, written by the Python side to
# data/pilot_power_rows.csv, so both sides simulate the same design.
#
# Each replicate is simulated here independently of the Python code: the fixed part is
# lme4's predict(re.form = NA, newparams) on the new rows (the pilot's poly basis and
# levels reapplied), each subject's intercept and scale(age) slope are drawn from the
# pilot's VarCorr with scale() centred and scaled as in the pilot, plus N(0, sigma^2)
# noise; the study model is fitted by lmerTest's lmer() and the Satterthwaite t test
# of poly(age, 2)2:SexMale counts as a detection at p < 0.05.
#
# Run from the repository root:   Rscript tests/reference/pilot_power_reference.R
# (about two minutes); writes tests/reference/pilot_power.csv and pilot_power_session.txt.

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
})

ref_dir <- file.path("tests", "reference")
if (!dir.exists(ref_dir)) stop("run from the repository root")
num <- function(x) sprintf("%.17g", x)

ortho <- read.csv(file.path(ref_dir, "data", "Orthodont.csv"), stringsAsFactors = TRUE)
form <- distance ~ poly(age, 2) * Sex + (1 + scale(age) | Subject)
pilot <- lme4::lmer(form, data = ortho, REML = TRUE)
beta <- fixef(pilot)
beta["poly(age, 2)2:SexMale"] <- 1.5
rows <- read.csv(file.path(ref_dir, "data", "pilot_power_rows.csv"))
rows$Sex <- factor(rows$Sex, levels = levels(ortho$Sex))
eta <- predict(pilot, newdata = rows, re.form = NA, newparams = list(beta = beta, theta = getME(pilot, "theta"), sigma = sigma(pilot)))
sc <- scale(ortho$age)
Z <- cbind(1, (rows$age - attr(sc, "scaled:center")) / attr(sc, "scaled:scale"))
R <- chol(VarCorr(pilot)$Subject[, ])
subject <- match(rows$Subject, unique(rows$Subject))
n_subjects <- length(unique(rows$Subject))

set.seed(20261202)
replicates <- 1000
p <- numeric(replicates)
for (r in seq_len(replicates)) {
  b <- matrix(rnorm(2 * n_subjects), n_subjects) %*% R
  rows$distance <- eta + rowSums(Z * b[subject, ]) + rnorm(nrow(rows), 0, sigma(pilot))
  fit <- suppressMessages(suppressWarnings(lmerTest::lmer(form, data = rows, REML = TRUE)))
  p[r] <- coef(summary(fit))["poly(age, 2)2:SexMale", "Pr(>|t|)"]
}
power <- mean(p < 0.05)
out <- data.frame(
  quantity = c("power", "mcse", "replicates", "subjects"),
  value = c(num(power), num(sqrt(power * (1 - power) / replicates)), replicates, n_subjects)
)
write.csv(out, file.path(ref_dir, "pilot_power.csv"), row.names = FALSE)
writeLines(capture.output(sessionInfo()), file.path(ref_dir, "pilot_power_session.txt"))

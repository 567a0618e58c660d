# Reference fit for a pilot study with a cluster-level factor (glmm_steps.pilot): nlme's
# Orthodont, distance ~ age + Sex + (age | Subject), REML, as lme4 fits it.
#
# Run from the repository root:   Rscript tests/reference/pilot_reference.R
# Reads tests/reference/data/Orthodont.csv (written by formula_reference.R) with
# read.csv(), so Sex is a factor with levels in sort order (Female, Male) as the Python
# reader makes it; writes tests/reference/pilot_fixtures.csv, pilot_transforms.csv (below)
# and pilot_session.txt.

suppressPackageStartupMessages(library(lme4))

ref_dir <- file.path("tests", "reference")
if (!dir.exists(ref_dir)) stop("run from the repository root")
num <- function(x) sprintf("%.17g", x)

ortho <- read.csv(file.path(ref_dir, "data", "Orthodont.csv"), stringsAsFactors = TRUE)
# A fit's fixed effects, and its SDs and correlations as broom.mixed names them.
estimate_rows <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  fe <- fixef(fit)
  rbind(
    data.frame(quantity = "fixef", group = "", term = names(fe), value = num(fe)),
    data.frame(
      quantity = ifelse(is.na(vc$var2), "sd", "cor"),
      group = vc$grp,
      term = ifelse(is.na(vc$var2), ifelse(is.na(vc$var1), "(Intercept)", vc$var1), paste(vc$var1, vc$var2, sep = ".")),
      value = num(vc$sdcor)
    )
  )
}

fit <- lmer(distance ~ age + Sex + (age | Subject), data = ortho, REML = TRUE)
units <- table(ortho$Sex[!duplicated(ortho$Subject)])
rows <- rbind(
  estimate_rows(fit),
  data.frame(quantity = "units", group = "Subject", term = names(units), value = as.character(as.integer(units)))
)
write.csv(rows, file.path(ref_dir, "pilot_fixtures.csv"), row.names = FALSE)

# ---- a pilot with transforms, a factor interaction and a transformed slope -----------
# distance ~ poly(age, 2) * Sex + (1 + scale(age) | Subject), REML. Written to
# pilot_transforms.csv:
#   fixef, sd, cor      lme4's estimates
#   predict             predict(re.form = NA) on ages 8..16 (16 is beyond the pilot's
#                       ages) for each Sex: the pilot's poly basis and levels reapplied
#   study_fixef         the coefficients of a study's poly(age, 2) * Sex, computed on the
#                       extended rows (54 subjects x ages 8..16), that reproduce those
#                       predictions exactly
#   study_sd, study_cor the random intercept and scale(age) slope of that study (scale()
#                       of the extended rows' ages) that reproduce the pilot's random part
fit2 <- lmer(distance ~ poly(age, 2) * Sex + (1 + scale(age) | Subject), data = ortho, REML = TRUE)
grid <- expand.grid(age = seq(8, 16, 2), Sex = levels(ortho$Sex))
pred <- predict(fit2, newdata = grid, re.form = NA)
# The study's rows: 54 subjects, each at every age (poly()'s basis has unit norm over
# all rows, so it depends on their number); the sexes alternate by subject.
ages <- rep(seq(8, 16, 2), 54)
study_rows <- data.frame(age = ages, Sex = factor(rep(levels(ortho$Sex), each = 5, length.out = length(ages))))
study_rows$pred <- predict(fit2, newdata = study_rows, re.form = NA)
study_fe <- coef(lm(pred ~ poly(age, 2) * Sex, data = study_rows))
sc <- scale(ortho$age)
Zp <- cbind(1, (ages - attr(sc, "scaled:center")) / attr(sc, "scaled:scale"))
Zs <- cbind(1, as.vector(scale(ages)))
A <- qr.solve(Zs, Zp)
Sigma <- VarCorr(fit2)$Subject[, ]
S <- A %*% Sigma %*% t(A)
rows2 <- rbind(
  estimate_rows(fit2),
  data.frame(quantity = "predict", group = as.character(grid$Sex), term = as.character(grid$age), value = num(pred)),
  data.frame(quantity = "study_fixef", group = "", term = names(study_fe), value = num(study_fe)),
  data.frame(quantity = "study_sd", group = "Subject", term = c("(Intercept)", "scale(age)"), value = num(sqrt(diag(S)))),
  data.frame(quantity = "study_cor", group = "Subject", term = "(Intercept).scale(age)", value = num(S[1, 2] / sqrt(S[1, 1] * S[2, 2])))
)
write.csv(rows2, file.path(ref_dir, "pilot_transforms.csv"), row.names = FALSE)
writeLines(capture.output(sessionInfo()), file.path(ref_dir, "pilot_session.txt"))

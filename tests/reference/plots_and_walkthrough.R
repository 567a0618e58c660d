# Real data for the plot and singular-fit tests and the README's "bring your own data" walkthrough,
# exported from the R packages that ship it, and lme4's fits of the walkthrough models.
# Run from the repository root:  Rscript tests/reference/plots_and_walkthrough.R
suppressPackageStartupMessages({library(lme4); library(mlmRev)})
# Pupils in schools (cross-sectional within school): the columns the tests use.
write.csv(Exam[, c("school", "student", "normexam", "standLRT", "sex")],
          "tests/reference/data/Exam_students.csv", row.names = FALSE)
# lme4's example of a variance estimated as zero (a singular fit).
write.csv(Dyestuff2, "tests/reference/data/Dyestuff2.csv", row.names = FALSE)
options(digits = 10)
cat("cbpp: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), binomial)\n")
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial)
print(cbind(estimate = fixef(m), se = sqrt(diag(as.matrix(vcov(m))))))
print(as.data.frame(VarCorr(m)))
print(logLik(m))
cat("\nsleepstudy: lmer(Reaction ~ Days + (Days | Subject), REML)\n")
m <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy)
print(cbind(estimate = fixef(m), se = sqrt(diag(as.matrix(vcov(m))))))
print(as.data.frame(VarCorr(m)))
print(logLik(m))
cat("\nExam: lmer(normexam ~ standLRT + (1 | school), REML)\n")
m <- lmer(normexam ~ standLRT + (1 | school), data = Exam)
print(cbind(estimate = fixef(m), se = sqrt(diag(as.matrix(vcov(m))))))
print(as.data.frame(VarCorr(m)))
print(logLik(m))
cat("\nDyestuff2: lmer(Yield ~ 1 + (1 | Batch), REML)\n")
m <- lmer(Yield ~ 1 + (1 | Batch), data = Dyestuff2)
print(as.data.frame(VarCorr(m)))
cat("isSingular:", isSingular(m), "\n")
cat("\nbp_study seed 123: lmer(bp ~ time + (time | hospital_id), REML)\n")
bp <- read.csv("tests/reference/data/bp_study_seed123.csv")
m <- lmer(bp ~ time + (time | hospital_id), data = bp)
print(as.data.frame(VarCorr(m)))
cat("isSingular:", isSingular(m), "\n")

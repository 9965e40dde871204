# Bar chart of one bench run; driven by scripts/bench/bench.py, which passes:
#   bwfile, iopsfile  data files: a header row of target names, then "workload" value...
#   outfile           PNG to write
#   ntargets          number of value columns
#   charttitle        overall title
set terminal pngcairo size 1600,700 font "sans,10" noenhanced
set output outfile
set multiplot layout 1,2 title charttitle
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right autotitle columnheader
set grid ytics
set yrange [0:*]
set xtics rotate by -25 scale 0
set colorsequence default

set title "Throughput (MiB/s, higher is better)"
set ylabel "MiB/s"
plot for [i=2:ntargets+1] bwfile using i:xtic(1)

set title "IOPS (thousands, higher is better)"
set ylabel "kIOPS"
plot for [i=2:ntargets+1] iopsfile using i:xtic(1)
unset multiplot
